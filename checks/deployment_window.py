"""Deployment window and freezes, in the environment's own time zone."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from bot.config import DAYS, EnvironmentConfig, _WINDOW
from checks.base import Gate, GateContext, GateResult


def _days(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        if "-" in part:
            a, b = (DAYS.index(x) for x in part.split("-"))
            i = a
            while True:
                out.add(i)
                if i == b:
                    break
                i = (i + 1) % 7
        else:
            out.add(DAYS.index(part))
    return out


def _parse_hhmm(s: str) -> time:
    h, m = map(int, s.split(":"))
    return time(23, 59, 59, 999999) if h == 24 else time(h, m)


def in_window(env: EnvironmentConfig, at: datetime) -> bool:
    if not env.windows:
        return True
    local = at.astimezone(env.zone)
    day, now = local.weekday(), local.time()
    for w in env.windows:
        m = _WINDOW.match(w.strip().lower())
        days, start, end = _days(m["days"]), _parse_hhmm(m["start"]), _parse_hhmm(m["end"])
        if start <= end:
            if day in days and start <= now < end:
                return True
        # an overnight window ("fri 22:00-06:00") opens on its days and runs into the next morning
        elif (day in days and now >= start) or ((day - 1) % 7 in days and now < end):
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
    t = after.astimezone(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = t + timedelta(days=8 + sum(1 for _ in env.freezes) * 31)
    while t < end:
        f = active_freeze(env, t)
        if f is not None:
            t = _parse_moment(f.end, env).astimezone(timezone.utc)
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
        return GATE.failed(f"{ctx.target_environment} is frozen until {freeze.end} ({freeze.reason or 'no reason given'}); "
                           f"next opening {when}",
                           "Wait for the freeze to end, or ask the release managers to lift it.",
                           freeze={"start": freeze.start, "end": freeze.end, "reason": freeze.reason},
                           next_opening=opening.isoformat() if opening else None)
    if in_window(env, ctx.now):
        return GATE.passed("inside the deployment window" if env.windows else "no deployment window configured",
                           windows=env.windows, timezone=env.timezone)
    opening = next_opening(env, ctx.now)
    local = ctx.now.astimezone(env.zone)
    when = f"{opening.astimezone(env.zone):%a %Y-%m-%d %H:%M} {env.timezone}" if opening else "none in the next week"
    return GATE.failed(f"{local:%a %H:%M} {env.timezone} is outside {ctx.target_environment}'s windows "
                       f"({', '.join(env.windows)}); next opening {when}",
                       "Ask again when the window opens.",
                       windows=env.windows, timezone=env.timezone,
                       next_opening=opening.isoformat() if opening else None)


GATE = Gate(name="deployment_window", title="Deployment window", evaluate=_evaluate)
