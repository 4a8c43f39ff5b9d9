"""Locks and holds: a person stops promotions into an environment, or takes an artifact out of circulation.

A lock blocks every promotion into one (service, environment), automatic ones
too (the ``environment_lock`` gate). A hold keeps an artifact out of every
environment (the ``artifact_hold`` gate); a verified rollback holds the artifact
it replaced. Placing and lifting both are audited.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlmodel import Session, col, select

from bot.engine import messages
from bot.engine.context import SYSTEM, EngineContext
from bot.engine.errors import UserError
from bot.engine.notifications import Notifications
from bot.engine.outcomes import DecisionResult
from bot.offload import off_loop
from bot.text import esc, literal, mention
from storage import audit
from storage.db import transaction
from storage.ledger import HELD
from storage.models import Artifact, EnvironmentLock, Promotion
from storage.statuses import PromotionKind

CLEARED = "artifact.hold_cleared"


def put_on_hold(
    s: Session,
    *,
    service: str,
    tag: str,
    reason: str,
    held_by: str,
    now: datetime,
    actor: str | None = None,
    promotion_id: str | None = None,
) -> bool:
    """Hold the artifact within the caller's transaction; False when it is unknown or already held."""
    artifact = s.exec(select(Artifact).where(col(Artifact.service) == service, col(Artifact.tag) == tag)).first()
    if artifact is None or artifact.hold_reason:
        return False
    artifact.hold_reason = reason
    s.add(artifact)
    audit.append(
        s,
        at=now,
        actor=actor or held_by,
        action=HELD,
        promotion_id=promotion_id,
        service=service,
        detail={"tag": tag, "reason": reason, "held_by": held_by},
    )
    return True


def clear_hold(s: Session, *, service: str, tag: str, reason: str, user: str, now: datetime) -> str | None:
    """Clear the hold within the caller's transaction; returns the reason it had, None if not held."""
    artifact = s.exec(select(Artifact).where(col(Artifact.service) == service, col(Artifact.tag) == tag)).first()
    if artifact is None or not artifact.hold_reason:
        return None
    previous, artifact.hold_reason = artifact.hold_reason, None
    s.add(artifact)
    audit.append(
        s,
        at=now,
        actor=user,
        action=CLEARED,
        service=service,
        detail={"tag": tag, "reason": reason, "was_held_for": previous},
    )
    return previous


def hold_replaced(s: Session, p: Promotion, now: datetime) -> bool:
    """Within a verified rollback's transaction: hold the artifact it replaced. True when it did."""
    if p.kind != PromotionKind.ROLLBACK.value or not p.replaces_tag or p.replaces_tag == p.tag:
        return False  # after a failed deploy the environment may "replace" the very artifact it restores
    reason = f"rolled back in {p.target_environment} by {p.id}" + (f": {p.reason}" if p.reason else "")
    return put_on_hold(
        s,
        service=p.service,
        tag=p.replaces_tag,
        reason=reason,
        held_by=p.requested_by,
        now=now,
        actor=SYSTEM,
        promotion_id=p.id,
    )


class Safeguards:
    """Locks on environments and holds on artifacts, as people place and lift them."""

    def __init__(self, ctx: EngineContext, notifications: Notifications):
        self.ctx = ctx
        self.notifications = notifications

    def lock(self, user: str, service: str, environment: str, reason: str) -> DecisionResult:
        """Anyone may lock (safety is cheap); a lock needs a reason."""
        self.ctx.service_config(service)
        self.ctx.environment_config(environment)
        reason = " ".join((reason or "").split())
        if not reason:
            return DecisionResult(False, messages.lock_needs_reason(service, environment))
        now = self.ctx.clock()
        where = f"{esc(service)} in {esc(environment)}"
        with transaction(self.ctx.db) as s:
            existing = s.get(EnvironmentLock, (service, environment))
            if existing is not None:
                return DecisionResult(
                    False,
                    f"{where} is already locked by {mention(existing.locked_by)} since "
                    f"{existing.locked_at:%Y-%m-%d %H:%M} UTC: {literal(existing.reason)}",
                )
            s.add(
                EnvironmentLock(service=service, environment=environment, locked_by=user, reason=reason, locked_at=now)
            )
            audit.append(
                s,
                at=now,
                actor=user,
                action="environment.locked",
                service=service,
                environment=environment,
                detail={"reason": reason},
            )
        return DecisionResult(
            True,
            f":lock: Locked {where}: {literal(reason)}. Every promotion into it, automatic "
            f"ones too, is refused until `/promote unlock {esc(service)} {esc(environment)}`.",
        )

    def lock_keepers(self, environment: str) -> tuple[str, list[str]]:
        """Who may lift a lock on ``environment``: its approvers. An environment nobody approves (dev, an
        automatic staging) takes those of the nearest later environment that has approvers, whose safety
        the lock protects. Returns (that environment, its approvers)."""
        names = self.ctx.config.environment_names
        for name in names[names.index(environment) :]:
            approvers = self.ctx.config.environment(name).approvers
            if approvers:
                return name, list(approvers)
        return environment, []

    def hold_keepers(self) -> tuple[str, list[str]]:
        """Who may clear a hold: the last environment's approvers. A hold keeps the artifact out of every
        environment, the last one included, so lifting it is a decision about production."""
        last = self.ctx.config.environment_names[-1]
        return last, list(self.ctx.config.environment(last).approvers)

    async def unlock(self, user: str, service: str, environment: str) -> DecisionResult:
        """Lifting a lock needs an approver of that environment (``lock_keepers``)."""
        self.ctx.service_config(service)
        self.ctx.environment_config(environment)
        now = self.ctx.clock()
        where = f"{esc(service)} in {esc(environment)}"
        current = await off_loop(self.ctx.ledger.lock, service, environment)
        if current is None:
            return DecisionResult(False, f"{where} is not locked; nothing changed.")
        keeper_env, keepers = self.lock_keepers(environment)
        if user not in await self.notifications.approver_users(keepers):
            return DecisionResult(False, messages.unlock_refused(current, keeper_env, keepers))
        existing = await asyncio.to_thread(self._unlock, user, service, environment, now)
        if existing is None:
            return DecisionResult(False, f"{where} is not locked; nothing changed.")
        return DecisionResult(
            True,
            f":unlock: Unlocked {where} (locked by {mention(existing.locked_by)} since "
            f"{existing.locked_at:%Y-%m-%d %H:%M} UTC: {literal(existing.reason)}).",
        )

    async def hold(self, user: str, service: str, tag: str, reason: str) -> DecisionResult:
        """Anyone may put an artifact on hold; a hold needs a reason."""
        svc = await off_loop(self._artifact_known, service, tag, clear=False)
        reason = " ".join((reason or "").split())
        if not reason:
            return DecisionResult(False, messages.hold_needs_reason(service, tag, clear=False))
        what = f"{esc(service)} `{esc(tag)}`"
        placed = await asyncio.to_thread(self._put_on_hold, user, service, tag, reason)
        if not placed:
            hold = await off_loop(self.ctx.ledger.hold, service, tag)
            return DecisionResult(False, f"{what} is already on hold: {literal(hold.reason if hold else '')}")
        note = (
            f":raised_hand: {mention(user)} put {what} on hold: {literal(reason)}. No environment takes it "
            f"until `/promote hold clear {esc(service)} {esc(tag)} reason…`."
        )
        await self.notifications.alert(svc, note)
        return DecisionResult(True, note)

    async def clear_hold(self, user: str, service: str, tag: str, reason: str) -> DecisionResult:
        """Clearing a hold needs a reason and an approver of the last environment (``hold_keepers``)."""
        svc = await off_loop(self._artifact_known, service, tag, clear=True)
        reason = " ".join((reason or "").split())
        if not reason:
            return DecisionResult(False, messages.hold_needs_reason(service, tag, clear=True))
        what = f"{esc(service)} `{esc(tag)}`"
        hold = await off_loop(self.ctx.ledger.hold, service, tag)
        if hold is None:
            return DecisionResult(False, f"{what} is not on hold; nothing changed.")
        keeper_env, keepers = self.hold_keepers()
        if user not in await self.notifications.approver_users(keepers):
            return DecisionResult(False, messages.clear_hold_refused(hold, keeper_env, keepers))
        previous = await asyncio.to_thread(self._clear_hold, user, service, tag, reason)
        if previous is None:
            return DecisionResult(False, f"{what} is not on hold; nothing changed.")
        note = (
            f":white_check_mark: {mention(user)} cleared the hold on {what} ({literal(previous)}): "
            f"{literal(reason)}. It may be promoted again."
        )
        await self.notifications.alert(svc, note)
        return DecisionResult(True, note)

    def _unlock(self, user: str, service: str, environment: str, now: datetime) -> EnvironmentLock | None:
        """The lock lifted (audited), or None if there was none."""
        with transaction(self.ctx.db) as s:
            existing = s.get(EnvironmentLock, (service, environment))
            if existing is None:
                return None
            s.delete(existing)
            audit.append(
                s,
                at=now,
                actor=user,
                action="environment.unlocked",
                service=service,
                environment=environment,
                detail={"was_locked_by": existing.locked_by, "reason": existing.reason},
            )
        return existing

    def _put_on_hold(self, user: str, service: str, tag: str, reason: str) -> bool:
        with transaction(self.ctx.db) as s:
            return put_on_hold(s, service=service, tag=tag, reason=reason, held_by=user, now=self.ctx.clock())

    def _clear_hold(self, user: str, service: str, tag: str, reason: str) -> str | None:
        with transaction(self.ctx.db) as s:
            return clear_hold(s, service=service, tag=tag, reason=reason, user=user, now=self.ctx.clock())

    def _artifact_known(self, service: str, tag: str, *, clear: bool) -> str:
        """The service's channel; raises UserError for an unknown service or artifact."""
        svc = self.ctx.service_config(service)
        if self.ctx.ledger.artifact(service, tag) is None:
            raise UserError(
                f"No artifact `{tag}` is recorded for {service}. Expected "
                f"`/promote hold{' clear' if clear else ''} SERVICE TAG reason…` with a built tag."
            )
        return svc.channel
