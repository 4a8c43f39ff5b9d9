"""The outbox's entries and their claims: which instance may work on a dispatch, and until when.

A claim is a short lease (``LEASE``) renewed by a heartbeat while the instance
works on the entry, so a replica that dies (SIGKILL, a lost node) gives its work
up within one lease, whatever its name. Every change is conditional on this
instance still holding the claim: a worker that lost it changes nothing, and
``renew(sending=True)`` right before the call that may start a run is the last
word on whether it may send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.engine.context import SYSTEM, EngineContext
from storage import audit
from storage.db import rowcount, transaction
from storage.models import OutboxEntry
from storage.statuses import OutboxStatus as O

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=15)  # a claim not renewed this long belonged to an instance that is gone
HEARTBEAT = LEASE / 3  # how often a working instance renews its claim


def due(now: datetime) -> sa.ColumnElement[bool]:
    """Entries an instance may claim at ``now``: waiting and due, or claimed by an instance whose lease ran out."""
    return sa.or_(
        sa.and_(col(OutboxEntry.status) == O.PENDING.value, col(OutboxEntry.next_attempt_at) <= now),
        sa.and_(col(OutboxEntry.status) == O.IN_FLIGHT.value, col(OutboxEntry.claimed_until) < now),
    )


class OutboxQueue:
    def __init__(self, ctx: EngineContext, *, lease: timedelta = LEASE):
        self.ctx = ctx
        self.lease = lease

    def _mine(self, entry: OutboxEntry) -> tuple[sa.ColumnElement[bool], ...]:
        return (
            col(OutboxEntry.id) == entry.id,
            col(OutboxEntry.status) == O.IN_FLIGHT.value,
            col(OutboxEntry.claimed_by) == self.ctx.instance_id,
        )

    def due_ids(self, limit: int = 20) -> list[int]:
        with Session(self.ctx.db) as s:
            query = select(col(OutboxEntry.id)).where(due(self.ctx.clock())).order_by(col(OutboxEntry.id)).limit(limit)
            return [i for i in s.exec(query) if i is not None]

    def recover_own_claims(self) -> int:
        """After a restart under the same instance name, take back at once what this instance had claimed."""
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
        """Take the entry for this instance (counting the attempt) if it is due; None if it is not, or another
        instance has it."""
        now = self.ctx.clock()
        with transaction(self.ctx.db) as s:
            # The attempt is counted before any call, so a crash mid-call is visible after restart.
            result = s.execute(
                sa.update(OutboxEntry)
                .where(col(OutboxEntry.id) == entry_id, due(now))
                .values(
                    status=O.IN_FLIGHT.value,
                    claimed_by=self.ctx.instance_id,
                    claimed_until=now + self.lease,
                    attempts=col(OutboxEntry.attempts) + 1,
                )
            )
            if rowcount(result) != 1:
                return None
            return s.get(OutboxEntry, entry_id)

    def renew(self, entry: OutboxEntry, *, sending: bool = False) -> bool:
        """Extend this instance's claim; False if the claim was lost. ``sending`` also records, in the same
        statement, that a dispatch that may start a run is about to go out (``sending_at``, ``sends``)."""
        now = self.ctx.clock()
        values: dict = {"claimed_until": now + self.lease}
        if sending:
            values.update(sending_at=now, sends=col(OutboxEntry.sends) + 1)
        with transaction(self.ctx.db) as s:
            renewed = rowcount(s.execute(sa.update(OutboxEntry).where(*self._mine(entry)).values(**values))) == 1
        if renewed and sending:
            entry.sending_at, entry.sends = now, entry.sends + 1
        return renewed

    @contextlib.asynccontextmanager
    async def heartbeat(self, entry: OutboxEntry) -> AsyncIterator[None]:
        """Keep this instance's claim alive while the block runs (gates, GitHub calls, looking for the run)."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT.total_seconds())
                try:
                    if not await asyncio.to_thread(self.renew, entry):
                        log.warning("outbox entry %s: claim lost to another instance", entry.id)
                        return
                except Exception:
                    log.warning("outbox entry %s: could not renew the claim", entry.id, exc_info=True)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def reschedule(self, entry: OutboxEntry, error: str, wait: float, *, audited: bool = True) -> datetime:
        """Give the entry back to the queue for another attempt in ``wait`` seconds; returns when. The audit
        event counts dispatch calls made so far (``attempt``), not claims."""
        now = self.ctx.clock()
        at = now + timedelta(seconds=wait)
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(OutboxEntry)
                .where(*self._mine(entry))
                .values(
                    status=O.PENDING.value,
                    claimed_by=None,
                    claimed_until=None,
                    last_error=error[:500],
                    next_attempt_at=at,
                )
            )
            if audited:
                audit.append(
                    s,
                    at=now,
                    actor=SYSTEM,
                    action="dispatch.retry_scheduled",
                    promotion_id=entry.promotion_id,
                    detail={"attempt": entry.sends, "error": error[:500], "retry_in_seconds": round(wait, 1)},
                )
        return at

    def finish(self, entry: OutboxEntry, status: O, note: str | None) -> None:
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(OutboxEntry)
                .where(col(OutboxEntry.id) == entry.id)
                .values(status=status.value, last_error=note, completed_at=self.ctx.clock(), claimed_until=None)
            )
