"""Where every artifact is: per service and environment, for ``/status`` and App Home.

Reads only; the rendering lives in ``handlers.blocks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from bot.engine import records
from bot.engine.context import EngineContext
from bot.engine.notifications import Notifications
from bot.engine.roles import PromotionView
from bot.offload import off_loop
from checks.deployment_window import WindowState, window_state
from checks.soak_time import SoakProgress, soak_progress
from storage import rows
from storage.models import ActivePromotion, Promotion
from storage.records import (
    DeploymentRecord,
    HoldRecord,
    LockRecord,
    OutOfBandRecord,
    ServiceEvidence,
    VerificationRecord,
)
from storage.statuses import PromotionStatus as S
from storage.statuses import VerificationResult


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
    out_of_band: OutOfBandRecord | None = None  # reported since promobot last deployed here: never evidence


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    environments: tuple[EnvironmentStatus, ...]
    now: datetime


@dataclass(frozen=True)
class OverviewCell:
    environment: str
    tag: str | None
    verification: str | None  # passed | failed | None (not verified since deployment)
    locked: bool = False
    held: bool = False
    pending: str | None = None  # status of the active promotion into this environment
    out_of_band: OutOfBandRecord | None = None


@dataclass(frozen=True)
class OverviewRow:
    service: str
    cells: tuple[OverviewCell, ...]

    @property
    def needs_attention(self) -> bool:
        return any(
            c.verification == VerificationResult.FAILED or c.locked or c.held or c.pending or c.out_of_band
            for c in self.cells
        )


class _Snapshot:
    """The deployments and verifications ``soak_progress`` asks for, answered from one service's evidence
    (those of the artifact each environment runs, newest first)."""

    def __init__(self, evidence: ServiceEvidence) -> None:
        self.evidence = evidence

    def deployments(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[DeploymentRecord]:
        return [d for d in self.evidence.deployments.get(environment, ()) if tag in (None, d.tag)][:limit]

    def verifications(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[VerificationRecord]:
        return [v for v in self.evidence.verifications.get(environment, ()) if tag in (None, v.tag)][:limit]


class Status:
    """Reads for /status and App Home."""

    def __init__(self, ctx: EngineContext, notifications: Notifications):
        self.ctx = ctx
        self.notifications = notifications

    def service_status(self, name: str) -> ServiceStatus:
        """Every environment of ``name``, from one read of its evidence (``SqlLedger.service_evidence``) and
        of its active promotions; raises UserError (with the closest names) for an unknown service. Reads
        the database: call it off the event loop."""
        self.ctx.service_config(name)
        config, now = self.ctx.config, self.ctx.clock()
        evidence = self.ctx.ledger.service_evidence(name)
        snapshot = _Snapshot(evidence)
        active = rows.active_slots(self.ctx.db, name)  # environment -> (promotion id, status), in one query
        environments = []
        for env_name in config.environment_names:
            env = config.environment(env_name)
            current = evidence.current.get(env_name)
            tag = current.tag if current else None
            deployed = verification = None
            if tag is not None:
                deployed = next(iter(evidence.deployments.get(env_name, ())), None)
                verification = next(
                    (
                        v
                        for v in evidence.verifications.get(env_name, ())
                        if deployed is None or v.finished_at >= deployed.finished_at
                    ),
                    None,
                )
            artifact = evidence.artifacts.get(tag) if tag else None
            slot = active.get(env_name)
            pending = records.view(self.ctx, slot[0]) if slot is not None and not S(slot[1]).is_terminal else None
            nxt = config.next_environment(env_name)
            soak = next_window = eligible_at = None
            if nxt is not None and tag is not None:
                next_env = config.environment(nxt)
                soak = soak_progress(snapshot, name, tag, env_name, next_env.soak_time, now)
                next_window = window_state(next_env, max(now, soak.eligible_at or now))
                if (
                    soak.since is not None
                    and verification is not None
                    and verification.result == VerificationResult.PASSED
                ):
                    ready = soak.eligible_at or now
                    eligible_at = max(now, ready) if next_window.open_now else next_window.next_opening
            following = evidence.current.get(nxt) if nxt else None
            status = EnvironmentStatus(
                environment=env_name,
                tag=tag,
                digest=artifact.digest if artifact else None,
                deployed=deployed,
                verification=verification,
                window=window_state(env, now),
                lock=evidence.locks.get(env_name),
                hold=self.ctx.ledger.hold(name, tag) if tag in evidence.held else None,
                pending=pending,
                next_environment=nxt,
                in_next=bool(tag and following and following.tag == tag),
                soak=soak,
                next_window=next_window,
                eligible_at=eligible_at,
                out_of_band=evidence.out_of_band.get(env_name),
            )
            environments.append(status)
        return ServiceStatus(name, tuple(environments), now)

    def overview(self) -> list[OverviewRow]:
        """Every service × environment from a handful of queries (not one per service)."""
        ledger, config = self.ctx.ledger, self.ctx.config
        current = ledger.current_deployments()
        verifications = ledger.latest_verifications()
        locked = {(lk.service, lk.environment) for lk in ledger.locks()}
        held = ledger.held_tags()
        flags = ledger.out_of_band_flags()
        with Session(self.ctx.db) as s:
            active = {
                (a.service, a.environment): status
                for a, status in s.exec(
                    select(ActivePromotion, col(Promotion.status)).join(
                        Promotion, col(Promotion.id) == col(ActivePromotion.promotion_id)
                    )
                )
            }
        rows = []
        for name in sorted(config.services):
            cells = []
            for env in config.environment_names:
                dep = current.get((name, env))
                ver = verifications.get((name, env))
                result = (
                    ver.result if dep and ver and ver.tag == dep.tag and ver.finished_at >= dep.finished_at else None
                )
                cells.append(
                    OverviewCell(
                        env,
                        dep.tag if dep else None,
                        result,
                        (name, env) in locked,
                        bool(dep and (name, dep.tag) in held),
                        active.get((name, env)),
                        flags.get((name, env)),
                    )
                )
            rows.append(OverviewRow(name, tuple(cells)))
        return rows

    async def awaiting_approval_by(self, user: str) -> list[PromotionView]:
        """Pending promotions that ``user`` may approve and has not: not theirs, and they are an approver."""
        out = []
        for view in await off_loop(self._pending_views, user):
            if (
                view is None
                or user in view.approved_by
                or view.target_environment not in self.ctx.config.environment_names
            ):
                continue
            if user in await self.notifications.approver_users(list(view.approvers)):
                out.append(view)
        return out

    def _pending_views(self, user: str) -> list[PromotionView | None]:
        """The cards of the promotions waiting for approval that ``user`` did not request, oldest first."""
        with Session(self.ctx.db) as s:
            ids = list(
                s.exec(
                    select(col(Promotion.id))
                    .where(col(Promotion.status) == S.PENDING_APPROVAL.value, col(Promotion.requested_by) != user)
                    .order_by(col(Promotion.requested_at))
                )
            )
        return [records.view(self.ctx, pid) for pid in ids]

    def requested_by(self, user: str, limit: int = 10) -> list[PromotionView]:
        """``user``'s latest requests, newest first."""
        with Session(self.ctx.db) as s:
            ids = list(
                s.exec(
                    select(col(Promotion.id))
                    .where(col(Promotion.requested_by) == user)
                    .order_by(col(Promotion.requested_at).desc())
                    .limit(limit)
                )
            )
        return [v for v in (records.view(self.ctx, pid) for pid in ids) if v is not None]
