"""One attempt at a claimed dispatch: look for an earlier attempt's run, check the gates, send, record.

Exactly once rests on three rules. A dispatch that may have reached GitHub
(``sending_at`` is set) is never repeated before promobot has looked for its run
for as long as GitHub may take to list it (``listing_lag``). The claim is renewed,
and the send recorded, in one statement right before the call. And a run that
was started is always recorded, whatever happened to the promotion meanwhile.

A gate that *failed* voids the promotion. A gate that *errored* (GitHub or the
registry did not answer) keeps it approved: the attempt is retried with backoff
until the approval expires, and the card says what it waits for.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from bot.engine import messages
from bot.engine.approvals import void
from bot.engine.context import SYSTEM, EngineContext
from bot.engine.notifications import Notifications
from bot.engine.outbox_queue import OutboxQueue
from bot.engine.records import WAITING_FOR_EVIDENCE as WAITING
from bot.engine.requests import Requests
from bot.engine.roles import DispatchError, DispatchRequest, RunInfo, describe
from bot.engine.transitions import move, release_slot
from bot.offload import off_loop
from checks.base import GateReport
from storage import audit
from storage.db import transaction
from storage.models import OutboxEntry, Promotion
from storage.statuses import OutboxStatus as O
from storage.statuses import PromotionStatus as S

log = logging.getLogger(__name__)

MAX_DISPATCH_ATTEMPTS = 8  # sends, not claims: looking for a run or waiting for evidence does not count
RETRY_BACKOFF_BASE = 2.0  # seconds before the first retry; doubles each attempt, at most MAX_BACKOFF
MAX_BACKOFF = 300.0
EVIDENCE_BACKOFF_CAP = 60.0  # waiting for GitHub or the registry: check again at least this often
LISTING_LAG = timedelta(seconds=35)  # GitHub lists a new run up to this long after accepting its dispatch
LOOK_EVERY = 3.0  # seconds between looks for an earlier attempt's run inside the listing window


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


class Delivery:
    def __init__(
        self,
        ctx: EngineContext,
        notifications: Notifications,
        requests: Requests,
        queue: OutboxQueue,
        *,
        backoff_base: float = RETRY_BACKOFF_BASE,
        listing_lag: timedelta = LISTING_LAG,
    ):
        self.ctx = ctx
        self.notifications = notifications
        self.requests = requests
        self.queue = queue
        self.backoff_base = backoff_base  # seconds before the first retry
        self.listing_lag = listing_lag

    def _backoff(self, n: int, cap: float = MAX_BACKOFF) -> float:
        return min(cap, self.backoff_base * (2 ** max(0, n - 1)))

    async def deliver(self, entry: OutboxEntry) -> None:
        """One attempt at a claimed entry, with its claim kept alive throughout."""
        p = await off_loop(self.ctx.promotion, entry.promotion_id)
        if p is None or p.status != S.APPROVED.value:
            await asyncio.to_thread(
                self.queue.finish, entry, O.DONE if p is not None else O.FAILED, "promotion no longer approved"
            )
            return
        async with self.queue.heartbeat(entry):
            await self._attempt(entry, p, dispatch_request(self.ctx, p))

    async def _attempt(self, entry: OutboxEntry, p: Promotion, request: DispatchRequest) -> None:
        ctx = self.ctx
        if entry.sending_at is not None and await self._reconciled(entry, p, request):
            return
        report = await self.requests.evaluate_promotion(p)
        if report.refused:
            if await asyncio.to_thread(void, ctx, p, report, SYSTEM, ctx.clock()):
                await self.notifications.announce(p.id, messages.not_dispatched_gates())
                await self._preempting_rollback_voided(p)
            await asyncio.to_thread(self.queue.finish, entry, O.DONE, "voided before dispatch")
            return
        if report.errored:
            await self._wait_for_evidence(entry, p, report)
            return
        if not await asyncio.to_thread(self.queue.renew, entry, sending=True):
            log.warning("outbox entry %s was taken over by another instance; not dispatching", entry.id)
            return
        try:
            run = await ctx.dispatcher.dispatch(request)
        except DispatchError as exc:
            if exc.retryable and entry.sends < MAX_DISPATCH_ATTEMPTS:
                # a possibly-sent dispatch is looked for first on the next attempt (sending_at is set)
                await asyncio.to_thread(
                    self.queue.reschedule, entry, str(exc), max(self._backoff(entry.sends), exc.retry_after or 0.0)
                )
                return
            # the last attempt may have started a run all the same: look before calling it failed
            late = await self._look(request, entry.created_at, self._window_left(entry)) if exc.maybe_sent else None
            if late is not None:
                await self._mark_dispatched(entry, p, request, late, reconciled=True)
                return
            await self.fail(entry, p, str(exc))
            return
        if run.run_id is None and not ctx.dispatcher.dry_run:
            run = await self._look(request, entry.created_at, self._window_left(entry)) or run
        await self._mark_dispatched(entry, p, request, run, reconciled=False)

    def _window_left(self, entry: OutboxEntry) -> float:
        """Seconds until GitHub has surely listed the run of this entry's latest send."""
        if entry.sending_at is None:
            return 0.0
        return max(0.0, (entry.sending_at + self.listing_lag - self.ctx.clock()).total_seconds())

    async def _reconciled(self, entry: OutboxEntry, p: Promotion, request: DispatchRequest) -> bool:
        """An earlier attempt may have started a run: True when this attempt is over (the run was found and
        recorded, looking goes on later, or it failed); False when the listing window passed without that
        run, so it never started and the dispatch may go out again."""
        try:
            run = await self.ctx.dispatcher.find_run(request, since=entry.created_at)
        except DispatchError as exc:
            if exc.retryable:
                wait = max(LOOK_EVERY, exc.retry_after or 0.0)
                await asyncio.to_thread(
                    self.queue.reschedule, entry, f"looking for the run of an earlier attempt: {exc}", wait
                )
            else:  # never dispatch again without knowing whether an earlier attempt went through
                await self.fail(
                    entry,
                    p,
                    f"could not check whether an earlier attempt started a run ({exc}); look at the workflow's runs",
                )
            return True
        if run is not None:
            await self._mark_dispatched(entry, p, request, run, reconciled=True)
            return True
        left = self._window_left(entry)
        if left > 0:
            wait = min(LOOK_EVERY, left)
            await asyncio.to_thread(self.queue.reschedule, entry, messages.run_not_listed_yet(), wait, audited=False)
            return True
        return False

    async def _look(self, request: DispatchRequest, since: datetime, window: float) -> RunInfo | None:
        """The run of this promotion's dispatch, looked for until ``window`` seconds have passed (at least a few
        looks: GitHub lists a new run a moment after accepting it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(window, 7.5)
        delay = 0.5
        while True:
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            try:
                run = await self.ctx.dispatcher.find_run(request, since=since)
            except DispatchError:
                run = None
            if run is not None or loop.time() >= deadline:
                return run
            delay = min(delay * 2, LOOK_EVERY)

    async def _wait_for_evidence(self, entry: OutboxEntry, p: Promotion, report: GateReport) -> None:
        """Some gate could not tell (its source did not answer): keep the promotion approved and try again with
        backoff until the approval expires; then void it, saying what could not be verified."""
        ctx = self.ctx
        now = ctx.clock()
        deadline = p.expires_at or (p.approved_at or now) + ctx.config.environment(p.target_environment).approval_ttl
        if now >= deadline:
            if await asyncio.to_thread(void, ctx, p, report, SYSTEM, now):
                await self.notifications.announce(p.id, messages.evidence_never_answered(report, deadline))
                await self._preempting_rollback_voided(p)
            await asyncio.to_thread(
                self.queue.finish, entry, O.DONE, "voided: the gates could not be checked before the approval expired"
            )
            return
        wait = max(1.0, min(self._backoff(entry.attempts, EVIDENCE_BACKOFF_CAP), (deadline - now).total_seconds()))
        first = not (entry.last_error or "").startswith(WAITING)
        at = await asyncio.to_thread(
            self.queue.reschedule, entry, WAITING + messages.unverified(report), wait, audited=first
        )
        # the card shows what it waits for and the next try; the thread hears of it once
        await self.notifications.announce(p.id, messages.waiting_for_evidence(report, at, deadline) if first else None)

    async def _preempting_rollback_voided(self, p: Promotion) -> None:
        """A rollback whose approval ended a bad deploy's wait was voided: that deploy still runs."""
        if p.preempts:
            channel = self.ctx.config.services[p.service].channel
            await self.notifications.alert_approvers(
                p.target_environment, channel, messages.preempting_rollback_voided(p)
            )

    async def fail(self, entry: OutboxEntry, p: Promotion, error: str) -> None:
        """Give up on the dispatch: the promotion fails with ``error`` and what to check."""
        await asyncio.to_thread(self._failed, entry, p, error, self.ctx.clock())
        svc = self.ctx.config.services[p.service]
        await self.notifications.announce(
            p.id, messages.dispatch_failed(entry.sends, error, svc.workflow, svc.repository, svc.ref)
        )

    def _failed(self, entry: OutboxEntry, p: Promotion, error: str, now: datetime) -> None:
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
                detail={"error": error, "attempts": entry.sends},
                completed_at=now,
                reason=f"dispatch failed: {error}",
            ):
                release_slot(s, p)

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
            "attempts": entry.sends,
            "reconciled": reconciled,
            "dry_run": dry_run,
        }
        moved, status = await asyncio.to_thread(self._dispatched, entry, p, run, detail, now)
        if not moved:
            await self.notifications.alert(
                ctx.config.services[p.service].channel, messages.dispatched_anyway(p, run.run_id, status)
            )
            return
        await self.notifications.announce(
            p.id,
            messages.dispatched(request, run.run_id, run.url, describe(request, dry_run=True) if dry_run else None),
        )

    def _dispatched(
        self, entry: OutboxEntry, p: Promotion, run: RunInfo, detail: dict[str, Any], now: datetime
    ) -> tuple[bool, S]:
        """Record the run sent: (whether the promotion moved to dispatched, its status now)."""
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(OutboxEntry)
                .where(col(OutboxEntry.id) == entry.id)
                .values(status=O.DONE.value, completed_at=now, claimed_until=None, last_error=None)
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
            return moved, S(current.status)
