"""The dispatch outbox: every approved promotion's workflow_dispatch, sent exactly once.

An approval and its outbox entry commit together. A worker claims the entry
with a lease and counts the attempt before calling GitHub, renews the claim
right before the one call that may start a run, and a worker that lost its
claim sends nothing. A retry after a possible send first looks for the run by
its promotion id (GitHub lists a new run a moment late), so a dispatch is never
blindly repeated.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.engine import messages
from bot.engine.approvals import Approvals, void
from bot.engine.context import SYSTEM, EngineContext
from bot.engine.notifications import Notifications
from bot.engine.requests import Requests
from bot.engine.roles import DispatchError, DispatchRequest, RunInfo, describe
from bot.engine.transitions import move, release_slot
from storage import audit
from storage.db import rowcount, transaction
from storage.models import OutboxEntry, Promotion
from storage.statuses import OutboxStatus as O
from storage.statuses import PromotionStatus as S

log = logging.getLogger(__name__)

# A claim must outlive everything one delivery can do (reconcile, gates, dispatch, finding the run):
# another replica may take an entry only when its claimer is surely gone.
OUTBOX_LEASE = timedelta(minutes=5)
MAX_DISPATCH_ATTEMPTS = 8
RETRY_BACKOFF_BASE = 2.0  # seconds before the first retry; doubles each attempt, at most 300


def dispatch_request(ctx: EngineContext, p: Promotion) -> DispatchRequest:
    """The contract's workflow_dispatch for ``p``: the service's workflow at its ref, with the four inputs."""
    svc = ctx.config.services[p.service]
    return DispatchRequest(
        repository=svc.repository,
        workflow=svc.workflow,
        ref=svc.ref,
        inputs={
            "environment": p.target_environment,
            "image_tag": p.tag,
            "image_digest": p.digest,
            "promotion_id": p.id,
        },
    )


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(col(OutboxEntry.status) == O.PENDING.value, col(OutboxEntry.next_attempt_at) <= now),
        sa.and_(col(OutboxEntry.status) == O.IN_FLIGHT.value, col(OutboxEntry.claimed_until) < now),
    )


class Outbox:
    def __init__(
        self,
        ctx: EngineContext,
        notifications: Notifications,
        requests: Requests,
        approvals: Approvals,
        *,
        backoff_base: float = RETRY_BACKOFF_BASE,
    ):
        self.ctx = ctx
        self.notifications = notifications
        self.requests = requests
        self.approvals = approvals
        self.backoff_base = backoff_base  # seconds before the first retry

    def recover_own_claims(self) -> int:
        """After a restart, take back at once what this instance had claimed before it died."""
        with transaction(self.ctx.db) as s:
            result = s.execute(
                sa.update(OutboxEntry)
                .where(
                    col(OutboxEntry.status) == O.IN_FLIGHT.value, col(OutboxEntry.claimed_by) == self.ctx.instance_id
                )
                .values(claimed_until=self.ctx.clock() - timedelta(seconds=1))
            )
            return rowcount(result)

    def claim(self, entry_id: int) -> OutboxEntry | None:
        """Take the entry for this instance (counting the attempt) if it is due; None if it is not, or
        another instance has it."""
        now = self.ctx.clock()
        with transaction(self.ctx.db) as s:
            # The attempt is counted before the call, so a crash mid-call is visible after restart.
            result = s.execute(
                sa.update(OutboxEntry)
                .where(col(OutboxEntry.id) == entry_id, _due(now))
                .values(
                    status=O.IN_FLIGHT.value,
                    claimed_by=self.ctx.instance_id,
                    claimed_until=now + OUTBOX_LEASE,
                    attempts=col(OutboxEntry.attempts) + 1,
                )
            )
            if rowcount(result) != 1:
                return None
            return s.get(OutboxEntry, entry_id)

    async def process(self) -> int:
        """Deliver every due dispatch this instance can claim; returns how many it handled."""
        with Session(self.ctx.db) as s:
            ids = list(
                s.exec(
                    select(col(OutboxEntry.id)).where(_due(self.ctx.clock())).order_by(col(OutboxEntry.id)).limit(20)
                )
            )
        handled = 0
        for entry_id in ids:
            assert entry_id is not None
            entry = self.claim(entry_id)
            if entry is None:
                continue
            handled += 1
            try:
                await self.deliver(entry)
            except Exception as exc:
                log.exception("outbox entry %s for %s failed unexpectedly", entry.id, entry.promotion_id)
                p = self.ctx.promotion(entry.promotion_id)
                if entry.attempts >= MAX_DISPATCH_ATTEMPTS and p is not None:
                    await self._fail(entry, p, f"internal error: {type(exc).__name__} (see the bot's logs)")
                else:
                    self._reschedule(entry, "internal error (see logs)", None)
        return handled

    async def deliver(self, entry: OutboxEntry) -> None:
        """One attempt at a claimed entry: reconcile, check the gates, renew the claim, dispatch."""
        ctx = self.ctx
        p = ctx.promotion(entry.promotion_id)
        if p is None or p.status != S.APPROVED.value:
            self._finish(entry, O.DONE if p is not None else O.FAILED, "promotion no longer approved")
            return
        request = dispatch_request(ctx, p)
        if entry.attempts > 1:
            # An earlier attempt may have reached GitHub before we lost track: never repeat blindly,
            # and look more than once (GitHub lists a new run a moment after accepting it).
            try:
                run = await self._find_after_dispatch(request, entry.created_at, delays=(0, 0.5, 1.5), strict=True)
            except DispatchError as exc:
                if exc.retryable and entry.attempts < MAX_DISPATCH_ATTEMPTS:
                    self._reschedule(entry, f"reconciling: {exc}", exc.retry_after)
                else:  # never dispatch again without knowing whether an earlier attempt went through
                    await self._fail(
                        entry,
                        p,
                        f"could not check whether an earlier attempt started a run ({exc}); "
                        "look at the workflow's runs",
                    )
                return
            if run is not None:
                await self._mark_dispatched(entry, p, request, run, reconciled=True)
                return
        report = await self.requests.evaluate_promotion(p)
        if not report.eligible:
            if void(ctx, p, report, SYSTEM, ctx.clock()):
                await self.notifications.announce(
                    p.id, "Not dispatched: the gates no longer hold (checked right before dispatch)."
                )
                if p.preempts:  # its approval ended the bad deploy's wait: that deploy still runs
                    channel = ctx.config.services[p.service].channel
                    await self.notifications.alert_approvers(
                        p.target_environment, channel, messages.preempting_rollback_voided(p)
                    )
            self._finish(entry, O.DONE, "voided before dispatch")
            return
        if not self._renew(entry):
            log.warning("outbox entry %s was taken over by another instance; not dispatching", entry.id)
            return
        try:
            run = await ctx.dispatcher.dispatch(request)
        except DispatchError as exc:
            if exc.retryable and entry.attempts < MAX_DISPATCH_ATTEMPTS:
                self._reschedule(entry, str(exc), exc.retry_after)
                return
            # the last attempt may have started a run all the same: look before calling it failed
            late = await self._find_after_dispatch(request, entry.created_at) if exc.maybe_sent else None
            if late is not None:
                await self._mark_dispatched(entry, p, request, late, reconciled=True)
                return
            await self._fail(entry, p, str(exc))
            return
        if run.run_id is None and not ctx.dispatcher.dry_run:
            run = await self._find_after_dispatch(request, entry.created_at) or run
        await self._mark_dispatched(entry, p, request, run, reconciled=False)

    async def _find_after_dispatch(
        self,
        request: DispatchRequest,
        since: datetime,
        *,
        delays: tuple[float, ...] = (0.5, 1, 2, 4),
        strict: bool = False,
    ) -> RunInfo | None:
        """The run of this promotion's dispatch, looked for a few times (GitHub lists runs a moment late).
        ``strict`` raises the last DispatchError when no look succeeded, instead of answering None."""
        error: DispatchError | None = None
        answered = False
        for delay in delays:
            await asyncio.sleep(delay)
            try:
                run = await self.ctx.dispatcher.find_run(request, since=since)
            except DispatchError as exc:
                error = exc
                continue
            answered = True
            if run is not None:
                return run
        if strict and not answered and error is not None:
            raise error
        return None

    def _renew(self, entry: OutboxEntry) -> bool:
        """Extend this instance's claim before a call that may send; False if the claim was lost."""
        with transaction(self.ctx.db) as s:
            return (
                rowcount(
                    s.execute(
                        sa.update(OutboxEntry)
                        .where(
                            col(OutboxEntry.id) == entry.id,
                            col(OutboxEntry.status) == O.IN_FLIGHT.value,
                            col(OutboxEntry.claimed_by) == self.ctx.instance_id,
                        )
                        .values(claimed_until=self.ctx.clock() + OUTBOX_LEASE)
                    )
                )
                == 1
            )

    def _reschedule(self, entry: OutboxEntry, error: str, retry_after: float | None) -> None:
        backoff = min(300.0, self.backoff_base * (2 ** max(0, entry.attempts - 1)))
        wait = max(backoff, retry_after or 0.0)
        now = self.ctx.clock()
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(OutboxEntry)
                .where(
                    col(OutboxEntry.id) == entry.id,
                    col(OutboxEntry.status) == O.IN_FLIGHT.value,
                    col(OutboxEntry.claimed_by) == self.ctx.instance_id,
                )
                .values(
                    status=O.PENDING.value,
                    claimed_by=None,
                    claimed_until=None,
                    last_error=error[:500],
                    next_attempt_at=now + timedelta(seconds=wait),
                )
            )
            audit.append(
                s,
                at=now,
                actor=SYSTEM,
                action="dispatch.retry_scheduled",
                promotion_id=entry.promotion_id,
                detail={"attempt": entry.attempts, "error": error[:500], "retry_in_seconds": round(wait, 1)},
            )

    def _finish(self, entry: OutboxEntry, status: O, note: str) -> None:
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(OutboxEntry)
                .where(col(OutboxEntry.id) == entry.id)
                .values(status=status.value, last_error=note, completed_at=self.ctx.clock(), claimed_until=None)
            )

    async def _fail(self, entry: OutboxEntry, p: Promotion, error: str) -> None:
        now = self.ctx.clock()
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(OutboxEntry)
                .where(col(OutboxEntry.id) == entry.id)
                .values(status=O.FAILED.value, last_error=error[:500], completed_at=now)
            )
            if move(
                s,
                p,
                S.APPROVED,
                S.FAILED,
                at=now,
                actor=SYSTEM,
                action="dispatch.failed",
                detail={"error": error, "attempts": entry.attempts},
                completed_at=now,
                reason=f"dispatch failed: {error}",
            ):
                release_slot(s, p)
        svc = self.ctx.config.services[p.service]
        await self.notifications.announce(
            p.id, messages.dispatch_failed(entry.attempts, error, svc.workflow, svc.repository, svc.ref)
        )

    async def _mark_dispatched(
        self, entry: OutboxEntry, p: Promotion, request: DispatchRequest, run: RunInfo, *, reconciled: bool
    ) -> None:
        ctx = self.ctx
        now = ctx.clock()
        dry_run = ctx.dispatcher.dry_run
        detail = {
            "repository": request.repository,
            "workflow": request.workflow,
            "ref": request.ref,
            "inputs": request.inputs,
            "run_id": run.run_id,
            "run_url": run.url,
            "attempts": entry.attempts,
            "reconciled": reconciled,
            "dry_run": dry_run,
        }
        with transaction(ctx.db) as s:
            s.execute(
                sa.update(OutboxEntry)
                .where(col(OutboxEntry.id) == entry.id)
                .values(status=O.DONE.value, completed_at=now, claimed_until=None)
            )
            moved = move(
                s,
                p,
                S.APPROVED,
                S.DISPATCHED,
                at=now,
                actor=SYSTEM,
                action="dispatch.sent",
                detail={**detail, "promotion_status": None},
                dispatched_at=now,
                pipeline_run_id=run.run_id,
                run_url=run.url,
            )
            current = s.get(Promotion, p.id)
            assert current is not None
            if not moved:
                # a run that was sent is on record even if the promotion moved meanwhile
                audit.append(
                    s,
                    at=now,
                    actor=SYSTEM,
                    action="dispatch.sent",
                    promotion_id=p.id,
                    service=p.service,
                    environment=p.target_environment,
                    detail={**detail, "promotion_status": current.status},
                )
        if not moved:
            await self.notifications.alert(
                ctx.config.services[p.service].channel, messages.dispatched_anyway(p, run.run_id, S(current.status))
            )
            return
        await self.notifications.announce(
            p.id,
            messages.dispatched(request, run.run_id, run.url, describe(request, dry_run=True) if dry_run else None),
        )

    async def run(self, stop: asyncio.Event, interval: float = 2.0) -> None:
        """Deliver dispatches until ``stop`` is set; wakes early when an approval lands. Each pass also
        completes approvals a crash interrupted and expires requests nobody approved in time."""
        self.recover_own_claims()
        while not stop.is_set():
            try:
                await self.approvals.resume()
                await self.process()
                await self.approvals.expire_due()
            except Exception:
                log.exception("outbox pass failed")
            self.ctx.outbox_wakeup.clear()
            waiter = asyncio.ensure_future(self.ctx.outbox_wakeup.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
