"""The dispatch outbox: every approved promotion's workflow_dispatch, sent exactly once.

An approval and its outbox entry commit together. The worker loop here claims
due entries (``outbox_queue``: short leases kept alive by a heartbeat) and hands
each to ``delivery`` for one attempt. Each pass also completes approvals a crash
interrupted and expires requests nobody approved in time.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from bot.engine.approvals import Approvals
from bot.engine.context import EngineContext
from bot.engine.delivery import LISTING_LAG, MAX_DISPATCH_ATTEMPTS, RETRY_BACKOFF_BASE, Delivery
from bot.engine.notifications import Notifications
from bot.engine.outbox_queue import LEASE, OutboxQueue
from bot.engine.requests import Requests
from bot.offload import off_loop
from storage.models import OutboxEntry

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self,
        ctx: EngineContext,
        notifications: Notifications,
        requests: Requests,
        approvals: Approvals,
        *,
        backoff_base: float = RETRY_BACKOFF_BASE,
        listing_lag: timedelta = LISTING_LAG,
        lease: timedelta = LEASE,
    ):
        self.ctx = ctx
        self.approvals = approvals
        self.queue = OutboxQueue(ctx, lease=lease)
        self.delivery = Delivery(
            ctx, notifications, requests, self.queue, backoff_base=backoff_base, listing_lag=listing_lag
        )

    def claim(self, entry_id: int) -> OutboxEntry | None:
        return self.queue.claim(entry_id)

    async def deliver(self, entry: OutboxEntry) -> None:
        await self.delivery.deliver(entry)

    async def process(self) -> int:
        """Deliver every due dispatch this instance can claim; returns how many it handled."""
        handled = 0
        for entry_id in await off_loop(self.queue.due_ids):
            entry = await asyncio.to_thread(self.queue.claim, entry_id)
            if entry is None:
                continue
            handled += 1
            try:
                await self.delivery.deliver(entry)
            except Exception as exc:
                log.exception("outbox entry %s for %s failed unexpectedly", entry.id, entry.promotion_id)
                p = await off_loop(self.ctx.promotion, entry.promotion_id)
                if entry.attempts >= MAX_DISPATCH_ATTEMPTS and p is not None:
                    await self.delivery.fail(entry, p, f"internal error: {type(exc).__name__} (see the bot's logs)")
                else:
                    await asyncio.to_thread(
                        self.queue.reschedule, entry, "internal error (see logs)", self.delivery.backoff_base
                    )
        return handled

    async def run(self, stop: asyncio.Event, interval: float = 2.0) -> None:
        """Deliver dispatches until ``stop`` is set; wakes early when an approval lands. Each pass also
        completes approvals a crash interrupted and expires requests nobody approved in time."""
        await asyncio.to_thread(self.queue.recover_own_claims)
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
