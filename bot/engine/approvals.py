"""Approvals and decisions: approve (N of M), reject, cancel, revoke, expiry, and voiding.

An approval is recorded first, on its own, before Slack hears "ok"
(``record_approval``), and completed afterwards (``complete_approval``): the
gates run again, then the move to approved and its outbox entry commit
together. ``resume`` completes approvals whose completion never ran.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.clock import format_duration
from bot.engine import incident, messages
from bot.engine.approval_writer import ApprovalWriter
from bot.engine.context import SYSTEM, EngineContext
from bot.engine.notifications import Notifications
from bot.engine.outcomes import DecisionResult
from bot.engine.records import approvers_of
from bot.engine.requests import Requests
from bot.engine.transitions import move, release_slot
from bot.offload import off_loop, urgent
from checks.base import GateReport
from storage.db import transaction
from storage.models import Approval, OutboxEntry, Promotion
from storage.statuses import Decision
from storage.statuses import PromotionStatus as S

# Where a decision's announcements go once it is committed: the Slack listener hands them to its follow-ups, so
# the click is acknowledged once its decision has committed and the card is redrawn after (None: awaited here)
Later = Callable[[Callable[[], Awaitable[None]]], None] | None

RESUME_AFTER = timedelta(seconds=30)  # an approval older than this whose completion never ran is resumed
SEEN_WAITING = 1024  # promotions remembered as read waiting for approval, the latest clicked


def _approved(actor: str, count: int | None, required: int | None) -> str:
    """The thread note of an approval that is not yet enough."""
    return f"<@{actor}> approved ({count} of {required})."


async def _then(later: Later, announce: Callable[[], Awaitable[None]]) -> None:
    if later is None:
        await announce()
    else:
        later(announce)


def approval_count(s: Session, promotion_id: str) -> int:
    return s.exec(
        select(sa.func.count())
        .select_from(Approval)
        .where(col(Approval.promotion_id) == promotion_id, col(Approval.decision) == Decision.APPROVE.value)
    ).one()


def void(
    ctx: EngineContext,
    p: Promotion,
    report: GateReport,
    actor: str,
    now: datetime,
    *,
    states: tuple[S, ...] = (S.PENDING_APPROVAL, S.APPROVED),
) -> bool:
    """The gates no longer hold: end the promotion as voided, with every reason."""
    reasons = "; ".join(f"{r.title}: {r.reason}" for r in report.blocking)
    with transaction(ctx.db) as s:
        moved = any(
            move(
                s,
                p,
                st,
                S.VOIDED,
                at=now,
                actor=actor,
                action=f"{p.kind}.voided",
                detail={"report": report.to_json()},
                completed_at=now,
                reason=reasons,
                gate_report=report.to_json(),
            )
            for st in states
        )
        if moved:
            release_slot(s, p)
    return moved


class Approvals:
    def __init__(self, ctx: EngineContext, notifications: Notifications, requests: Requests):
        self.ctx = ctx
        self.notifications = notifications
        self.requests = requests
        self.writer = ApprovalWriter(ctx.db, self._already, self._cannot_revoke)
        # promotions read waiting for approval: an approval or revoke of one is written without reading it again,
        # and a cancel by someone else refused (event loop only)
        self._seen_waiting: OrderedDict[str, Promotion] = OrderedDict()
        # one opened here is known waiting too: its first approval need not read it (in bench/ack_bench.py,
        # the first clicks on each card were the slowest approvals, 36-87 ms of reading before the write)
        requests.when_waiting(self._remember_waiting)

    def _already(self, promotion_id: str) -> str:
        p = self.ctx.promotion(promotion_id)
        assert p is not None
        names: list[str] = []
        if S(p.status) in (S.APPROVED, S.DISPATCHED, S.DEPLOYED, S.VERIFIED):
            with Session(self.ctx.db) as s:
                names = approvers_of(s, p.id)
        return messages.already_decided(p, names)

    async def approve(self, promotion_id: str, user: str) -> DecisionResult:
        """Record ``user``'s approval, then complete it: dispatch once enough approvals are in."""
        recorded = await self.record_approval(promotion_id, user)
        if not recorded.changed:
            return recorded
        return await self.complete_approval(promotion_id, user, recorded)

    async def record_approval(self, promotion_id: str, user: str, *, later: Later = None) -> DecisionResult:
        """The fast, durable half of an approval (before Slack is acknowledged): no approval is lost
        if the process dies right after; ``resume`` completes it on restart. (What tells people about a
        promotion this finds expired goes to ``later``.)"""
        seen = self._seen_waiting.get(promotion_id)
        if seen is not None and await self._may_approve(seen, user):
            if promotion_id in self._seen_waiting:  # other clicks may have pushed it out while the directory answered
                self._seen_waiting.move_to_end(promotion_id)
            # what an approval needs of its promotion never changes once requested; whether it still waits
            # is what the writer asks, under the row's lock
            return await self.writer.record(seen, user, self.ctx.clock())
        p = await urgent(self.ctx.promotion, promotion_id)
        if p is None:
            return DecisionResult(False, messages.no_such_promotion(promotion_id))
        refusal = await self.refusal(p, user, Decision.APPROVE.value, later=later)
        if refusal:
            return DecisionResult(False, refusal, p.id)
        self._remember_waiting(p)
        return await self.writer.record(p, user, self.ctx.clock())

    def _remember_waiting(self, p: Promotion) -> None:
        """``p`` was read waiting for approval: a later click on it need not read it again for what never
        changes (its service, environment, requester, approvals needed)."""
        self._seen_waiting[p.id] = p
        self._seen_waiting.move_to_end(p.id)
        while len(self._seen_waiting) > SEEN_WAITING:
            self._seen_waiting.popitem(last=False)

    async def _may_approve(self, p: Promotion, user: str) -> bool:
        """Whether ``user`` may approve ``p`` (read before, waiting then), if it still waits. When not, the
        full refusal is worked out on the promotion as it is now (its status says why first)."""
        return not self._past_deadline(p) and await self._not_theirs(p, user, Decision.APPROVE.value) is None

    async def complete_approval(
        self, promotion_id: str, actor: str, recorded: DecisionResult | None = None
    ) -> DecisionResult:
        """With enough approvals, check every gate again and queue the dispatch (or void). ``recorded``, the
        answer of ``record_approval``, says how many approvals there were with this one: counted in commit
        order, so only the approval that reached the number needed completes, and one short of it only tells
        the card (the promotion is not read again)."""
        ctx = self.ctx
        if recorded is not None and recorded.short_of_required:
            await self.notifications.announce(promotion_id, _approved(actor, recorded.approvals, recorded.required))
            return recorded
        p, count = await off_loop(self._with_count, promotion_id)
        if p is None or p.status != S.PENDING_APPROVAL.value:
            return DecisionResult(False, await off_loop(self._already, promotion_id) if p else "gone", promotion_id)
        if count < p.required_approvals:
            await self.notifications.announce(p.id, _approved(actor, count, p.required_approvals))
            return DecisionResult(True, f"Approval recorded: {count} of {p.required_approvals}.", p.id)
        if self._past_deadline(p):
            await self.expire_due()  # approvals completed after the deadline do not count
            return DecisionResult(False, messages.expired_before_complete(p), p.id)
        report = await self.requests.evaluate_promotion(p)
        now = ctx.clock()
        if report.refused:
            # only a pending request: once approved, the dispatch's own check decides (never two voiders)
            if await asyncio.to_thread(void, ctx, p, report, actor, now, states=(S.PENDING_APPROVAL,)):
                await self.notifications.announce(p.id, f"Approval by <@{actor}> voided: the gates no longer hold.")
            return DecisionResult(
                True,
                "The evidence changed since the request; the gates no longer hold, "
                "so the promotion is void. See the card for why.",
                p.id,
            )
        done = await asyncio.to_thread(self._approve, p, actor, report, now)
        if isinstance(done, DecisionResult):
            return done
        expired, ended = done
        if expired:
            await self.expire_due()  # approvals completed after the deadline do not count
            return DecisionResult(False, messages.expired_before_complete(p), p.id)
        await self.notifications.announce(p.id, messages.approved_note(actor, report))
        if ended:
            await self.notifications.announce(ended, messages.preempted_note(p))
        ctx.outbox_wakeup.set()
        return DecisionResult(True, f"Approved `{p.id}`; dispatching.", p.id)

    def _approve(
        self, p: Promotion, actor: str, report: GateReport, now: datetime
    ) -> DecisionResult | tuple[bool, str | None]:
        """Move ``p`` to approved and queue its dispatch, in one transaction; (expired, the rollback's ended
        promotion) when it moved or its deadline passed, the refusal otherwise."""
        with transaction(self.ctx.db) as s:
            approvers = approvers_of(s, p.id)
            if not move(
                s,
                p,
                S.PENDING_APPROVAL,
                S.APPROVED,
                at=now,
                actor=actor,
                action=f"{p.kind}.approved",
                detail={"approvers": approvers, "expedited": p.expedited, "report": report.to_json()},
                before=now,
                approved_at=now,
                gate_report=report.to_json(),
            ):
                current = s.get(Promotion, p.id)
                if current is not None and current.status == S.PENDING_APPROVAL.value:
                    expired = True  # still pending: the deadline passed while the gates ran
                elif current is not None and current.status == S.EXPIRED.value:
                    return DecisionResult(False, messages.expired_before_complete(p), p.id)
                else:
                    return DecisionResult(False, self._already(p.id), p.id)
            else:
                expired = False
            # counted again under the row lock: an approval revoked while the gates ran must not count
            count = approval_count(s, p.id)
            if count < p.required_approvals:
                s.rollback()
                return DecisionResult(
                    False,
                    f"An approval was revoked meanwhile: {count} of "
                    f"{p.required_approvals}; `{p.id}` still waits for approval.",
                    p.id,
                )
            ended = None
            if not expired:
                s.add(OutboxEntry(promotion_id=p.id, next_attempt_at=now, created_at=now))
                # a rollback requested during an incident: its approval ends the bad deploy's wait
                ended = incident.end_wait(s, p, actor=actor, approvers=approvers, now=now)
        return expired, ended

    def _with_count(self, promotion_id: str) -> tuple[Promotion | None, int]:
        """The promotion as it is now, and how many approvals it has."""
        p = self.ctx.promotion(promotion_id)
        if p is None:
            return None, 0
        with Session(self.ctx.db) as s:
            return p, approval_count(s, p.id)

    async def resume(self) -> int:
        """Complete approvals that were recorded but not completed (the process died in between)."""
        rows = await off_loop(self._interrupted)
        for promotion_id, approver in rows:
            await self.complete_approval(promotion_id, approver)
        return len(rows)

    def _interrupted(self) -> list[tuple[str, str]]:
        """(promotion, an approver) of each promotion with enough approvals that is still waiting, a while
        after its last approval."""
        with Session(self.ctx.db) as s:
            rows = s.exec(
                select(col(Promotion.id), sa.func.max(col(Approval.approver)))
                .join(Approval, col(Approval.promotion_id) == col(Promotion.id))
                .where(
                    col(Promotion.status) == S.PENDING_APPROVAL.value, col(Approval.decision) == Decision.APPROVE.value
                )
                .group_by(col(Promotion.id), col(Promotion.required_approvals))
                .having(sa.func.count(col(Approval.id)) >= col(Promotion.required_approvals))
                # a fresh approval is still being completed by the handler that recorded it
                .having(sa.func.max(col(Approval.decided_at)) <= self.ctx.clock() - RESUME_AFTER)
            ).all()
        return [(promotion_id, approver) for promotion_id, approver in rows]

    async def reject(self, promotion_id: str, user: str, reason: str, *, later: Later = None) -> DecisionResult:
        """Reject ``p`` with ``reason``; returns once it is committed (its announcements handed to ``later``)."""
        p = await urgent(self.ctx.promotion, promotion_id)
        if p is None:
            return DecisionResult(False, messages.no_such_promotion(promotion_id))
        reason = (reason or "").strip()
        if not reason:
            return DecisionResult(False, "A rejection needs a reason, so the requester knows what to fix.", p.id)
        refusal = await self.refusal(p, user, Decision.REJECT.value, later=later)
        if refusal:
            return DecisionResult(False, refusal, p.id)
        if not await urgent(self._reject, p, user, reason, self.ctx.clock()):
            return DecisionResult(False, await urgent(self._already, p.id), p.id)

        async def announce() -> None:
            await self.notifications.announce(p.id, messages.rejected_note(user, reason))
            await self.notifications.tell(p.requested_by, messages.rejected_tell(p, user, reason))

        await _then(later, announce)
        return DecisionResult(True, f"Rejected `{p.id}`.", p.id)

    def _reject(self, p: Promotion, user: str, reason: str, now: datetime) -> bool:
        with transaction(self.ctx.db) as s:
            if not move(
                s,
                p,
                S.PENDING_APPROVAL,
                S.REJECTED,
                at=now,
                actor=user,
                action=f"{p.kind}.rejected",
                detail={"reason": reason},
                completed_at=now,
                reason=reason,
                decided_by=user,
            ):
                return False
            # an approver who approved and then rejects has changed their mind: the rejection is their decision
            s.execute(sa.delete(Approval).where(col(Approval.promotion_id) == p.id, col(Approval.approver) == user))
            s.add(
                Approval(
                    promotion_id=p.id, approver=user, decision=Decision.REJECT.value, reason=reason, decided_at=now
                )
            )
            release_slot(s, p)
        return True

    async def cancel(self, promotion_id: str, user: str, *, later: Later = None) -> DecisionResult:
        """Cancel ``p`` (its requester only); returns once it is committed (its announcement handed to
        ``later``)."""
        seen = self._seen_waiting.get(promotion_id)
        p = seen if seen is not None and user != seen.requested_by else await urgent(self.ctx.promotion, promotion_id)
        if p is None:
            return DecisionResult(False, messages.no_such_promotion(promotion_id))
        if user != p.requested_by:  # (the requester never changes: known without reading it again)
            return DecisionResult(False, f"Only the requester <@{p.requested_by}> can cancel `{p.id}`.", p.id)
        if not await urgent(self._cancel, p, user, self.ctx.clock()):
            return DecisionResult(False, await urgent(self._already, p.id), p.id)
        await _then(later, lambda: self.notifications.announce(p.id, f"Cancelled by <@{user}>."))
        return DecisionResult(True, f"Cancelled `{p.id}`.", p.id)

    def _cancel(self, p: Promotion, user: str, now: datetime) -> bool:
        with transaction(self.ctx.db) as s:
            if not move(
                s,
                p,
                S.PENDING_APPROVAL,
                S.CANCELLED,
                at=now,
                actor=user,
                action=f"{p.kind}.cancelled",
                completed_at=now,
                decided_by=user,
                reason="cancelled by the requester",
            ):
                return False
            release_slot(s, p)
        return True

    async def revoke(self, promotion_id: str, user: str, *, later: Later = None) -> DecisionResult:
        """Withdraw ``user``'s approval while the promotion still waits for approvals (the count goes
        back down); once it is approved and queued or dispatched, refuse and say what to do instead. Returns
        once it is committed (its announcement handed to ``later``)."""
        # a promotion seen waiting is not read again: whether it still waits is asked under the row lock
        p = self._seen_waiting.get(promotion_id)
        if p is None:
            p = await urgent(self.ctx.promotion, promotion_id)
            if p is None:
                return DecisionResult(False, messages.nothing_to_revoke(promotion_id))
            if p.status != S.PENDING_APPROVAL.value:  # most revokes that fail, fail here, without the write lock
                return DecisionResult(False, await urgent(self._cannot_revoke, p.id), p.id)
            self._remember_waiting(p)
        revoked = await self.writer.revoke(p, user, self.ctx.clock())
        if revoked.changed:
            note = f"<@{user}> revoked their approval ({revoked.approvals} of {revoked.required})."
            await _then(later, lambda: self.notifications.announce(p.id, note))
        return revoked

    def _cannot_revoke(self, promotion_id: str) -> str:
        """Why no approval of the promotion can be revoked now (it no longer waits for approvals)."""
        current = self.ctx.promotion(promotion_id)
        assert current is not None
        if S(current.status) in (S.APPROVED, S.DISPATCHED, S.DEPLOYED, S.VERIFIED):
            return messages.revoke_refused(current)
        return self._already(current.id)

    async def refusal(self, p: Promotion, user: str, verb: str, *, later: Later = None) -> str | None:
        """Why ``user`` may not ``verb`` (approve or reject) ``p`` now, or None when they may. A promotion past
        its deadline is expired, and what tells people so handed to ``later`` (the ack need not wait for it)."""
        if p.status != S.PENDING_APPROVAL.value:
            return await urgent(self._already, p.id)
        not_theirs = await self._not_theirs(p, user, verb)
        if not_theirs:
            return not_theirs
        if self._past_deadline(p):
            await self.expire_due(later=later)
            assert p.expires_at is not None
            return messages.expired_ask_again(p, format_duration(p.expires_at - p.requested_at))
        return None

    async def _not_theirs(self, p: Promotion, user: str, verb: str) -> str | None:
        """Why ``p`` is not ``user``'s to ``verb``: their own request, or they are no approver of it."""
        if user == p.requested_by:
            return messages.own_request(p, verb)
        approvers = self.ctx.approvers_for(p.target_environment, expedited=p.expedited)
        if user not in await self.notifications.approver_users(approvers):
            if p.expedited:
                return messages.not_an_expedite_approver(p, approvers)
            return messages.not_an_approver(p.target_environment, approvers)
        return None

    def _past_deadline(self, p: Promotion) -> bool:
        return p.expires_at is not None and self.ctx.clock() >= p.expires_at

    async def expire_due(self, *, later: Later = None) -> int:
        """Expire pending promotions whose approval_ttl has run out; returns how many. What tells people goes to
        ``later`` (a click's ack need not wait for cards and DMs), or is awaited here."""
        expired = await asyncio.to_thread(self._expire, self.ctx.clock())

        async def tell() -> None:
            for p in expired:
                await self.notifications.announce(p.id, "Expired: nobody approved in time.")
                await self.notifications.tell(p.requested_by, messages.expired_tell(p))

        await _then(later, tell)
        return len(expired)

    def _expire(self, now: datetime) -> list[Promotion]:
        with Session(self.ctx.db) as s:
            due = s.exec(
                select(Promotion).where(
                    col(Promotion.status) == S.PENDING_APPROVAL.value, col(Promotion.expires_at) <= now
                )
            ).all()
        expired = []
        for p in due:
            with transaction(self.ctx.db) as s:
                if move(
                    s,
                    p,
                    S.PENDING_APPROVAL,
                    S.EXPIRED,
                    at=now,
                    actor=SYSTEM,
                    action=f"{p.kind}.expired",
                    completed_at=now,
                    reason="approval_ttl elapsed",
                ):
                    release_slot(s, p)
                    expired.append(p)
        return expired
