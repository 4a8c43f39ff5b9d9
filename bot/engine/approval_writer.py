"""Approvals and their revocations written in batches: the durable half of an approval, before Slack is
acknowledged, and of a revoke.

Each approval is a transaction that locks its promotion's row and the audit chain's head, and commits
(a disk flush). One at a time, under load, they queued behind each other's locks: with 50 people clicking,
an approval's ack waited seconds, most of it for other approvals' round trips and flushes. Here one thread
takes every approval waiting and writes them in one transaction however many there are, in two phases
(``storage.approval_batch``: on PostgreSQL a round trip each, BEGIN with the first and COMMIT a third): the rows of their
promotions locked in id order and bumped (as ``lock_row`` does for one), who approved them read, the audit
head locked; then their approvals inserted and their events chained, all at once. Nobody is acknowledged
before the transaction that holds their approval has committed. If a batch fails as a whole, its
approvals are written again one by one, so one bad approval cannot fail the others.

A revoke takes the same way (each on its own was a transaction of six statements and cost more of the
interpreter than anything else a click does). The asks of a batch are applied in the order they came, so
an approval and its revocation in one batch are both recorded, in that order, and counted in that order.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from bot.engine.outcomes import DecisionResult
from storage import approval_batch
from storage.models import Promotion
from storage.statuses import PromotionStatus as S

log = logging.getLogger(__name__)
MAX_BATCH = 64  # approvals in one transaction
IDLE_SECONDS = 5.0  # the thread ends after this long without work, and starts again with the next approval


@dataclass
class _Ask:
    promotion: Promotion
    user: str
    at: datetime
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[DecisionResult]
    revoke: bool = False  # withdraw the approval instead of recording one
    result: DecisionResult | None = field(default=None)


class ApprovalWriter:
    """Records approvals and revokes them. Why a promotion takes no more approvals (``already``), or why an
    approval of it cannot be revoked (``cannot_revoke``), is read after the batch commits."""

    def __init__(self, db: Engine, already: Callable[[str], str], cannot_revoke: Callable[[str], str]) -> None:
        self.db = db
        self.already = already
        self.cannot_revoke = cannot_revoke
        self._batch = approval_batch.for_dialect(db.dialect)
        self._asks: queue.SimpleQueue[_Ask] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    async def record(self, p: Promotion, user: str, at: datetime) -> DecisionResult:
        """Record ``user``'s approval of ``p`` (read a moment ago) as of ``at``; returns once it is committed,
        or why it was not recorded."""
        return await self._ask(p, user, at, revoke=False)

    async def revoke(self, p: Promotion, user: str, at: datetime) -> DecisionResult:
        """Withdraw ``user``'s approval of ``p`` as of ``at``; returns once that is committed (with the
        approvals left), or why there was nothing to withdraw."""
        return await self._ask(p, user, at, revoke=True)

    async def _ask(self, p: Promotion, user: str, at: datetime, *, revoke: bool) -> DecisionResult:
        loop = asyncio.get_running_loop()
        ask = _Ask(p, user, at, loop, loop.create_future(), revoke)
        self._asks.put(ask)
        with self._lock:
            if not self._running:
                self._running = True
                try:
                    threading.Thread(target=self._run, name="approvals", daemon=True).start()
                except BaseException:
                    self._running = False
                    raise
        return await ask.answer

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # never leave asks waiting for a thread that is gone
            with self._lock:
                self._running = False
            while True:
                try:
                    _answer(self._asks.get_nowait(), exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                except queue.Empty:
                    break
            raise

    def _serve(self) -> None:
        while True:
            try:
                first = self._asks.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._asks.empty():
                        self._running = False
                        return
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._asks.get_nowait())
                except queue.Empty:
                    break
            self._write_batch(batch)

    def _write_batch(self, batch: list[_Ask]) -> None:
        try:
            self._write(batch)
        except Exception:
            log.warning("a batch of %d approvals failed; writing them one by one", len(batch), exc_info=True)
            for ask in batch:
                ask.result = None
                try:
                    self._write([ask], retry=True)
                except Exception as one:
                    _answer(ask, one)
                else:
                    _answer(ask)
            return
        _answer_all(batch)

    def _write(self, batch: list[_Ask], *, retry: bool = False) -> None:
        """Every ask of ``batch`` in one transaction of a few statements, however many asks (each round trip
        a thread makes under load costs it a wait for the interpreter's lock), applied in the order they
        came; each ask's result is set once it has committed. ``retry``: the batch failed, perhaps at a
        commit the server had made before the connection dropped, so an ask whose event is already audited
        at its own instant was done by that commit: answered from the event, not applied again."""
        refused: set[tuple[str, bool]] = set()  # (promotion, revoke) no longer waiting: why is read after the commit
        with self._batch.begin(self.db) as tx:
            locked = tx.lock(sorted({ask.promotion.id for ask in batch}), S.PENDING_APPROVAL.value)
            have = set(locked.approvals)  # (promotion, approver) approved, as the asks so far leave it
            stored = set(have)  # as the database holds them under the lock
            counts = dict.fromkeys(locked.open, 0)
            for pid, _ in have:
                counts[pid] += 1
            approved: dict[tuple[str, str], datetime] = {}  # approvals to insert, with their time
            events: list[dict[str, Any]] = []
            for ask in batch:
                p, pair = ask.promotion, (ask.promotion.id, ask.user)
                if retry and (done := self._done_before(tx, ask)) is not None:
                    ask.result = done  # its commit went through: answered from its event, not applied again
                    continue
                if p.id not in locked.open:
                    refused.add((p.id, ask.revoke))
                    continue
                if not ask.revoke and pair in have:
                    ask.result = DecisionResult(False, "You have already approved this promotion.", p.id)
                    continue
                if ask.revoke and pair not in have:
                    ask.result = _not_approved(p)
                    continue
                if ask.revoke:
                    have.discard(pair)
                    approved.pop(pair, None)
                    counts[p.id] -= 1
                    ask.result = _revoked(p, counts[p.id])
                else:
                    have.add(pair)
                    approved[pair] = ask.at
                    counts[p.id] += 1
                    ask.result = _recorded(p, counts[p.id])
                events.append(
                    dict(
                        at=ask.at,
                        actor=ask.user,
                        action=_action(ask),
                        promotion_id=p.id,
                        service=p.service,
                        environment=p.target_environment,
                        detail={"approvals": counts[p.id], "required": p.required_approvals},
                    )
                )
            # an approval revoked (and perhaps given again) goes; one given goes in with its latest time
            if events:  # (every change has its event: none, nothing to write)
                tx.write(
                    approval_batch.Changes(
                        revoked=stored - have | (stored & approved.keys()),
                        approved=approved,
                        events=events,
                        head=locked.head,
                    ),
                )
        # committed: what follows only words the refusals, and must not send the batch round again
        why = {key: self._why(*key) for key in refused}
        for ask in batch:
            if ask.result is None:
                ask.result = DecisionResult(False, why[(ask.promotion.id, ask.revoke)], ask.promotion.id)

    @staticmethod
    def _done_before(tx: approval_batch.Tx, ask: _Ask) -> DecisionResult | None:
        """``ask``'s answer, if a transaction that committed already applied it (its audited event is there,
        at its instant: written in the same transaction as its approval, it says that one committed, and
        with what count)."""
        p = ask.promotion
        for at, detail in tx.own_events(p.id, ask.user, _action(ask)):
            if _same_time(at, ask.at):
                count = int((detail or {}).get("approvals", 0))
                return _revoked(p, count) if ask.revoke else _recorded(p, count)
        return None

    def _why(self, promotion_id: str, revoke: bool) -> str:
        """Why the promotion takes no more approvals, or revocations (read after the commit: a failure here
        must not send the batch round again)."""
        try:
            return self.cannot_revoke(promotion_id) if revoke else self.already(promotion_id)
        except Exception:
            log.warning("could not read why %s takes no more approvals", promotion_id, exc_info=True)
            return f"`{promotion_id}` is no longer waiting for approval."


def _counted(p: Promotion, count: int, text: str) -> DecisionResult:
    return DecisionResult(True, text, p.id, approvals=count, required=p.required_approvals)


def _recorded(p: Promotion, count: int) -> DecisionResult:
    return _counted(p, count, f"Approval recorded: {count} of {p.required_approvals}.")


def _action(ask: _Ask) -> str:
    return f"{ask.promotion.kind}.{'approval_revoked' if ask.revoke else 'approval'}"


def _revoked(p: Promotion, count: int) -> DecisionResult:
    return _counted(p, count, f"Your approval of `{p.id}` is revoked: {count} of {p.required_approvals}.")


def _not_approved(p: Promotion) -> DecisionResult:
    return DecisionResult(False, f"You have not approved `{p.id}`, so there is nothing to revoke.", p.id)


def _same_time(stored: datetime | None, at: datetime) -> bool:
    """Whether ``stored`` (as the database gave it back; SQLite drops the zone) is the instant ``at``."""
    if stored is None:
        return False
    if stored.tzinfo is None:
        stored = stored.replace(tzinfo=UTC)
    return stored == at.astimezone(UTC)


def _answer(ask: _Ask, error: Exception | None = None) -> None:
    """Hand ``ask``'s result (or the error that stopped it) to the event loop that waits for it."""
    _answer_all([ask], error)


def _answer_all(asks: list[_Ask], error: Exception | None = None) -> None:
    """Hand each ask's result (or the error that stopped them) to the event loop that waits for it: one
    call per loop, however many asks. Each call wakes the loop by writing to a socket, which lets go of the
    interpreter's lock; under load, taking it back waited for the busy event loop's thread, up to 5 ms a time,
    so a batch's last ask was answered up to 21 ms (p99) after its commit when each ask had a call."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Ask]] = {}
    for ask in asks:
        by_loop.setdefault(ask.loop, []).append(ask)
    for loop, waiting in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, waiting, error)
        except RuntimeError:  # the loop has closed: nobody waits for the answers any more
            log.info("%d approval answers found their event loop closed", len(waiting))


def _settle(asks: list[_Ask], error: Exception | None) -> None:
    """(On the asks' event loop.) Each ask's result, or the error."""
    for ask in asks:
        if ask.answer.done():
            continue
        if error is not None or ask.result is None:
            ask.answer.set_exception(error or RuntimeError("the approval was not recorded"))
        else:
            ask.answer.set_result(ask.result)
