"""Where every artifact is: per service and environment, for ``/status`` and App Home.

Reads only; the rendering lives in ``handlers.blocks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from bot.roles import PromotionView, SoakProgress, WindowState
from bot.states import PromotionStatus as S
from checks.base import DeploymentRecord, HoldRecord, Ledger, LockRecord, VerificationRecord
from checks.deployment_window import active_freeze, in_window, next_opening
from storage.models import ActivePromotion, Promotion

if TYPE_CHECKING:
    from bot.promotions import PromotionService


def soak_progress(ledger: Ledger, service: str, tag: str, environment: str, required: timedelta,
                  now: datetime) -> SoakProgress:
    """Soak of ``tag`` in ``environment``, counted as the soak gate counts it: from the first passed
    verification after the latest successful deployment."""
    deployments = [d for d in ledger.deployments(service, environment, tag=tag, limit=50) if d.status == "success"]
    passed = [v for v in ledger.verifications(service, environment, tag=tag, limit=50) if v.result == "passed"]
    if deployments:
        passed = [v for v in passed if v.finished_at >= deployments[0].finished_at]
    if not passed:
        return SoakProgress(environment, None, timedelta(0), required)
    since = min(v.finished_at for v in passed)
    return SoakProgress(environment, since, max(now - since, timedelta(0)), required)


def window_state(env, now: datetime) -> WindowState:
    """Whether ``env`` (an EnvironmentConfig) takes deployments at ``now``, and when it opens next."""
    freeze = active_freeze(env, now)
    open_now = freeze is None and in_window(env, now)
    return WindowState(environment=env.name, windows=tuple(env.windows), timezone=env.timezone, open_now=open_now,
                       freeze_reason=(freeze.reason or "no reason given") if freeze else None,
                       freeze_end=freeze.end if freeze else None,
                       next_opening=None if open_now else next_opening(env, now))


@dataclass(frozen=True)
class EnvironmentStatus:
    """One environment of one service: what runs there, and what may come next."""

    environment: str
    tag: str | None
    digest: str | None
    deployed: DeploymentRecord | None
    verification: VerificationRecord | None  # the current artifact's latest verification since its deployment
    window: WindowState
    lock: LockRecord | None
    hold: HoldRecord | None  # on the artifact that runs here
    pending: PromotionView | None  # the active promotion into this environment
    next_environment: str | None = None
    in_next: bool = False  # the next environment already runs this artifact
    soak: SoakProgress | None = None  # toward the next environment
    next_window: WindowState | None = None
    eligible_at: datetime | None = None  # soak done and the next environment's window open


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    environments: tuple[EnvironmentStatus, ...]
    now: datetime


def service_status(engine: "PromotionService", name: str) -> ServiceStatus:
    """Every environment of ``name``; raises UserError (with the closest names) for an unknown service."""
    engine.service_config(name)
    ledger, config, now = engine.ledger, engine.config, engine.clock()
    rows = []
    for env_name in config.environment_names:
        env = config.environment(env_name)
        tag = ledger.current_artifact(name, env_name)
        deployed = verification = None
        if tag is not None:
            deployed = next(iter(ledger.deployments(name, env_name, tag=tag, limit=1)), None)
            verification = next((v for v in ledger.verifications(name, env_name, tag=tag, limit=1)
                                 if deployed is None or v.finished_at >= deployed.finished_at), None)
        artifact = ledger.artifact(name, tag) if tag else None
        active = engine._active(name, env_name)
        pending = engine.view(active.id) if active is not None and not S(active.status).is_terminal else None
        nxt = config.next_environment(env_name)
        soak = next_window = eligible_at = None
        if nxt is not None and tag is not None:
            next_env = config.environment(nxt)
            soak = soak_progress(ledger, name, tag, env_name, next_env.soak_time, now)
            next_window = window_state(next_env, max(now, soak.eligible_at or now))
            if soak.since is not None and verification is not None and verification.result == "passed":
                eligible_at = max(now, soak.eligible_at) if next_window.open_now else next_window.next_opening
        status = EnvironmentStatus(
            environment=env_name, tag=tag, digest=artifact.digest if artifact else None, deployed=deployed,
            verification=verification, window=window_state(env, now), lock=ledger.lock(name, env_name),
            hold=ledger.hold(name, tag) if tag else None, pending=pending, next_environment=nxt,
            in_next=bool(nxt and tag and ledger.current_artifact(name, nxt) == tag), soak=soak,
            next_window=next_window, eligible_at=eligible_at)
        rows.append(status)
    return ServiceStatus(name, tuple(rows), now)


@dataclass(frozen=True)
class OverviewCell:
    environment: str
    tag: str | None
    verification: str | None  # passed | failed | None (not verified since deployment)
    locked: bool = False
    held: bool = False
    pending: str | None = None  # status of the active promotion into this environment


@dataclass(frozen=True)
class OverviewRow:
    service: str
    cells: tuple[OverviewCell, ...]

    @property
    def needs_attention(self) -> bool:
        return any(c.verification == "failed" or c.locked or c.held or c.pending for c in self.cells)


def overview(engine: "PromotionService") -> list[OverviewRow]:
    """Every service × environment from a handful of queries (not one per service)."""
    ledger, config = engine.ledger, engine.config
    current = ledger.current_deployments()
    verifications = ledger.latest_verifications()
    locked = {(lk.service, lk.environment) for lk in ledger.locks()}
    held = ledger.held_tags()
    with Session(engine.engine) as s:
        active = {(a.service, a.environment): status for a, status in
                  s.exec(select(ActivePromotion, Promotion.status)
                         .join(Promotion, col(Promotion.id) == col(ActivePromotion.promotion_id)))}
    rows = []
    for name in sorted(config.services):
        cells = []
        for env in config.environment_names:
            dep = current.get((name, env))
            ver = verifications.get((name, env))
            result = (ver.result if dep and ver and ver.tag == dep.tag and ver.finished_at >= dep.finished_at
                      else None)
            cells.append(OverviewCell(env, dep.tag if dep else None, result, (name, env) in locked,
                                      bool(dep and (name, dep.tag) in held), active.get((name, env))))
        rows.append(OverviewRow(name, tuple(cells)))
    return rows


async def awaiting_approval_by(engine: "PromotionService", user: str) -> list[PromotionView]:
    """Pending promotions that ``user`` may approve and has not: not theirs, and they are an approver."""
    with Session(engine.engine) as s:
        ids = list(s.exec(select(Promotion.id).where(Promotion.status == S.PENDING_APPROVAL.value,
                                                     Promotion.requested_by != user)
                          .order_by(col(Promotion.requested_at))))
    out = []
    for pid in ids:
        view = engine.view(pid)
        if view is None or user in view.approved_by or view.target_environment not in engine.config.environment_names:
            continue
        if user in await engine._approver_users(list(view.approvers)):
            out.append(view)
    return out


def requested_by(engine: "PromotionService", user: str, limit: int = 10) -> list[PromotionView]:
    """``user``'s latest requests, newest first."""
    with Session(engine.engine) as s:
        ids = list(s.exec(select(Promotion.id).where(Promotion.requested_by == user)
                          .order_by(col(Promotion.requested_at).desc()).limit(limit)))
    return [v for v in (engine.view(pid) for pid in ids) if v is not None]
