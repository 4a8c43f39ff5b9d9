"""Deployment window and freezes, in the environment's own time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.config import EnvironmentConfig, parse_window
from checks.base import Gate, GateContext, GateResult


def in_window(env: EnvironmentConfig, at: datetime) -> bool:
    if not env.windows:
        return True
    local = at.astimezone(env.zone)
    day, now = local.weekday(), local.time()
    for w in map(parse_window, env.windows):
        if w.start <= w.end:
            if day in w.days and w.start <= now < w.end:
                return True
        # an overnight window ("fri 22:00-06:00") opens on its days and runs into the next morning
        elif (day in w.days and now >= w.start) or ((day - 1) % 7 in w.days and now < w.end):
            return True
    return False


def _parse_moment(text: str, env: EnvironmentConfig) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=env.zone)


def active_freeze(env: EnvironmentConfig, at: datetime):
    for f in env.freezes:
        if _parse_moment(f.start, env) <= at < _parse_moment(f.end, env):
            return f
    return None


def next_opening(env: EnvironmentConfig, after: datetime) -> datetime | None:
    """The first minute at or after ``after`` inside a window and outside every freeze (8 days ahead)."""
    t = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = t + timedelta(days=8 + sum(1 for _ in env.freezes) * 31)
    while t < end:
        f = active_freeze(env, t)
        if f is not None:
            t = _parse_moment(f.end, env).astimezone(UTC)
            continue
        if in_window(env, t):
            return t
        t += timedelta(minutes=15 - t.minute % 15) if t.minute % 15 else timedelta(minutes=15)
    return None


async def _evaluate(ctx: GateContext) -> GateResult:
    env = ctx.environment_config
    freeze = active_freeze(env, ctx.now)
    if freeze is not None:
        opening = next_opening(env, ctx.now)
        when = f"{opening.astimezone(env.zone):%a %Y-%m-%d %H:%M} {env.timezone}" if opening else "unknown"
        return GATE.failed(
            f"{ctx.target_environment} is frozen until {freeze.end} ({freeze.reason or 'no reason given'}); "
            f"next opening {when}",
            "Wait for the freeze to end, or ask the release managers to lift it.",
            freeze={"start": freeze.start, "end": freeze.end, "reason": freeze.reason},
            next_opening=opening.isoformat() if opening else None,
        )
    if in_window(env, ctx.now):
        return GATE.passed(
            "inside the deployment window" if env.windows else "no deployment window configured",
            windows=env.windows,
            timezone=env.timezone,
        )
    opening = next_opening(env, ctx.now)
    local = ctx.now.astimezone(env.zone)
    when = f"{opening.astimezone(env.zone):%a %Y-%m-%d %H:%M} {env.timezone}" if opening else "none in the next week"
    return GATE.failed(
        f"{local:%a %H:%M} {env.timezone} is outside {ctx.target_environment}'s windows "
        f"({', '.join(env.windows)}); next opening {when}",
        "Ask again when the window opens.",
        windows=env.windows,
        timezone=env.timezone,
        next_opening=opening.isoformat() if opening else None,
    )


GATE = Gate(name="deployment_window", title="Deployment window", evaluate=_evaluate)


@dataclass(frozen=True)
class WindowState:
    """An environment's deployment window and freezes at one moment (for /status and cards)."""

    environment: str
    windows: tuple[str, ...]
    timezone: str
    open_now: bool
    freeze_reason: str | None = None  # set while a freeze is active
    freeze_end: str | None = None
    next_opening: datetime | None = None


def window_state(env: EnvironmentConfig, now: datetime) -> WindowState:
    """Whether ``env`` takes deployments at ``now``, and when it opens next."""
    freeze = active_freeze(env, now)
    open_now = freeze is None and in_window(env, now)
    return WindowState(
        environment=env.name,
        windows=tuple(env.windows),
        timezone=env.timezone,
        open_now=open_now,
        freeze_reason=(freeze.reason or "no reason given") if freeze else None,
        freeze_end=freeze.end if freeze else None,
        next_opening=None if open_now else next_opening(env, now),
    )
