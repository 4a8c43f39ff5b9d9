"""The audit trail: append-only and hash-chained.

Each event's hash covers its content and the previous event's hash, so an
edit, a deletion or a reordering breaks the chain at that event. Writers
first lock the single ``audit_head`` row (by updating it, or, where the number
of events is known only later, ``lock_head``'s SELECT … FOR UPDATE), a row lock
on PostgreSQL (and the write lock on SQLite): concurrent writers are serialised
and the chain stays linear. The head also records how long the chain is and
its last hash, so a truncated tail shows. After a retention purge
(``storage.retention``) the chain starts at the latest ``AuditAnchor``.

The hash is unkeyed: someone with write access who recomputes every later hash
and the head can rewrite history undetected. Posting the head hash elsewhere
(the daily digest does) is what makes such a rewrite visible.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from storage.db import AUDIT_KEY
from storage.models import AuditAnchor, AuditEvent, AuditHead

GENESIS = "0" * 64


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)  # one instance: verify hashes millions


def _canonical(value: Any) -> str:
    return _ENCODER.encode(value)


def event_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    promotion_id: str | None,
    service: str | None,
    environment: str | None,
    detail: dict | None,
    prev_hash: str,
    key: bytes | None = None,
) -> str:
    """SHA-256 of the event's canonical content; with ``key``, HMAC-SHA256 (and the content says it is keyed,
    so a keyed event cannot pass as an unkeyed one)."""
    content = {
        "seq": seq,
        "at": at.isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "promotion_id": promotion_id,
        "service": service,
        "environment": environment,
        "detail": detail or {},
        "prev_hash": prev_hash,
    }
    if key is not None:
        content["keyed"] = True
        return hmac.new(key, _canonical(content).encode(), hashlib.sha256).hexdigest()
    return hashlib.sha256(_canonical(content).encode()).hexdigest()


def session_key(session: Session) -> bytes | None:
    """The HMAC key the session's engine was built with (PROMOBOT_AUDIT_KEY), or None."""
    return session.connection().info.get(AUDIT_KEY)


def _recompute(ev: AuditEvent | sa.Row, key: bytes | None = None) -> str:
    return event_hash(
        key=key,
        seq=ev.seq,
        at=ev.at,
        actor=ev.actor,
        action=ev.action,
        promotion_id=ev.promotion_id,
        service=ev.service,
        environment=ev.environment,
        detail=ev.detail,
        prev_hash=ev.prev_hash,
    )


_HEAD = AuditHead.__table__  # type: ignore[attr-defined]
_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
_EVENT_COLUMNS = [c.name for c in _EVENTS.columns]


def _take_head(session: Session, count: int = 1) -> tuple[int, str]:
    """Lock the head row and advance its seq by ``count``, creating it on the very first append; returns the
    new seq and the hash of the event before the ``count`` new ones."""
    bump = (
        _HEAD.update().where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq + count).returning(_HEAD.c.seq, _HEAD.c.last_hash)
    )
    head = session.execute(bump).first()
    if head is None:
        try:
            with session.begin_nested():
                session.add(AuditHead(id=1, seq=count, last_hash=GENESIS))
            return count, GENESIS
        except IntegrityError:
            # another writer created it first; its commit released the row to us
            head = session.execute(bump).one()
    return head.seq, head.last_hash or GENESIS


def append(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    promotion_id: str | None = None,
    service: str | None = None,
    environment: str | None = None,
    detail: dict | None = None,
) -> AuditEvent:
    """Add one event at the tip of the chain, inside the caller's transaction."""
    return append_many(
        session,
        [
            dict(
                at=at,
                actor=actor,
                action=action,
                promotion_id=promotion_id,
                service=service,
                environment=environment,
                detail=detail,
            )
        ],
    )[0]


def append_many(session: Session, events: list[dict[str, Any]]) -> list[AuditEvent]:
    """Add ``events`` (each the keyword arguments of ``append``) at the tip of the chain, in order, inside the
    caller's transaction: one lock of the head for all of them."""
    if not events:
        return []
    session.flush()  # what the caller added goes first, before the head is locked (as the ORM's autoflush did)
    # Taking the head row's lock first is what serialises writers.
    last_seq, prev = _take_head(session, len(events))
    rows = chained(events, after=(last_seq - len(events), prev), key=session_key(session))
    # Core statements, compiled once (the ORM's unit of work and its bulk UPDATE cost the writer of a batch of
    # approvals two fifths of its time; a multi-row VALUES is compiled again for every number of rows). With
    # RETURNING, SQLAlchemy sends the rows as one INSERT … VALUES (…), (…) ("insertmanyvalues"); without it,
    # psycopg sent one INSERT per event and waited on the socket for each.
    session.execute(_EVENTS.insert().returning(_EVENTS.c.seq), rows)
    session.execute(_HEAD.update().where(_HEAD.c.id == 1).values(last_hash=rows[-1]["hash"]))
    return [AuditEvent(**row) for row in rows]


def chained(events: list[dict[str, Any]], *, after: tuple[int, str], key: bytes | None) -> list[dict[str, Any]]:
    """``events`` (each the keyword arguments of ``append``) as the chain's rows that follow the event ``after``
    (its seq and its hash), in order, hashed with ``key`` (``session_key``) if there is one."""
    seq, prev = after
    rows = []
    for event in events:
        if event["at"].tzinfo is None:  # (as the UTC columns refuse one)
            raise ValueError("naive datetime given to the audit chain")
        seq += 1
        row = dict(
            seq=seq,
            at=event["at"].astimezone(UTC),
            actor=event["actor"],
            action=event["action"],
            promotion_id=event.get("promotion_id"),
            service=event.get("service"),
            environment=event.get("environment"),
            detail=json.loads(_canonical(event.get("detail") or {})),
            prev_hash=prev,
            keyed=key is not None,
        )
        row["hash"] = prev = event_hash(key=key, **{k: v for k, v in row.items() if k != "keyed"})
        rows.append(row)
    return rows


# The head locked without moving it, for a writer that learns how many events it adds only once it holds the
# lock (``storage.approval_batch``), then moved to the last of them.
LOCK_HEAD = sa.select(_HEAD.c.seq, _HEAD.c.last_hash).where(_HEAD.c.id == 1).with_for_update()
MOVE_HEAD = (
    _HEAD.update().where(_HEAD.c.id == 1).values(seq=sa.bindparam("new_seq"), last_hash=sa.bindparam("new_hash"))
)
EVENTS = _EVENTS
HEAD = _HEAD


def lock_head(session: Session) -> tuple[int, str]:
    """Lock the head row (creating it before the very first event) and return the chain's last seq and hash."""
    head = session.execute(LOCK_HEAD).first()
    if head is None:
        return _take_head(session, 0)
    return head.seq, head.last_hash or GENESIS


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"event {self.seq}: {self.problem}"


def verify_events(
    events: Iterable[AuditEvent | sa.Row],
    *,
    head: AuditHead | None = None,
    anchor: str = GENESIS,
    first_seq: int = 1,
    key: bytes | None = None,
    mode: ChainMode | None = None,
) -> ChainProblem | None:
    """Recompute the chain from ``anchor``; return the first event altered, removed, reordered,
    added past the head or truncated from the tail (checked against ``head`` when given), or None.
    Keyed events are checked with ``key``; once the chain is keyed, an unkeyed event is a forgery.
    ``mode`` (when given) counts what was checked how."""
    prev, expected_seq = anchor, first_seq
    last = None
    first_keyed: int | None = None
    for ev in events:
        keyed = bool(getattr(ev, "keyed", False))
        if keyed and key is None:
            return ChainProblem(ev.seq, "is keyed (an HMAC chain from here on): set PROMOBOT_AUDIT_KEY to verify it")
        if keyed and first_keyed is None:
            first_keyed = ev.seq
        if not keyed and first_keyed is not None:
            return ChainProblem(
                ev.seq, f"written without the audit key after the chain was keyed at event {first_keyed} (forged)"
            )
        if mode is not None:
            mode.count(ev.seq, keyed)
        if head is not None and ev.seq > head.seq:
            return ChainProblem(
                ev.seq, f"not recorded by the chain head, which ends at {head.seq} (added outside promobot)"
            )
        if ev.seq != expected_seq:
            what = "missing (removed)" if ev.seq > expected_seq else "out of order"
            return ChainProblem(expected_seq, f"{what}; found event {ev.seq} where {expected_seq} belongs")
        intact = hmac.compare_digest(_recompute(ev, key if keyed else None), ev.hash)
        if not intact:
            return ChainProblem(ev.seq, "altered or moved from another position (its hash does not match its content)")
        if ev.prev_hash != prev:
            if last is None:
                return ChainProblem(
                    ev.seq,
                    "its link does not match the start of the chain (altered, or the events before it were removed)",
                )
            # this event is intact, so the one before it changed after this was chained to it
            return ChainProblem(
                last.seq, f"altered and its hash recomputed (event {ev.seq} still links to its original hash)"
            )
        prev, expected_seq, last = ev.hash, expected_seq + 1, ev
    if head is not None:
        if head.seq >= expected_seq:
            return ChainProblem(
                expected_seq,
                f"missing (truncated): the chain head records events up to "
                f"{head.seq}, the chain ends at {expected_seq - 1}",
            )
        if (head.last_hash or GENESIS) != prev:
            where = last.seq if last is not None else first_seq
            return ChainProblem(where, "altered and its hash recomputed (the chain head records another hash)")
    return None


def latest_anchor(session: Session) -> AuditAnchor | None:
    """The most recent purge's anchor, where the stored chain now starts (None before any purge)."""
    return session.exec(select(AuditAnchor).order_by(col(AuditAnchor.seq).desc()).limit(1)).first()


@dataclass
class ChainMode:
    """How a verification checked the chain: unkeyed SHA-256 events, then (once keyed) HMAC events."""

    unkeyed: int = 0
    keyed: int = 0
    first_keyed: int | None = None

    def count(self, seq: int, keyed: bool) -> None:
        if keyed:
            self.keyed += 1
            self.first_keyed = self.first_keyed or seq
        else:
            self.unkeyed += 1

    def __str__(self) -> str:
        if not self.keyed:
            return "unkeyed SHA-256 chain (set PROMOBOT_AUDIT_KEY to make it an HMAC chain)"
        before = f"; the {self.unkeyed} events before it are unkeyed SHA-256" if self.unkeyed else ""
        return f"keyed HMAC-SHA256 chain from event {self.first_keyed}{before}"


def verify(session: Session, mode: ChainMode | None = None) -> ChainProblem | None:
    """Recompute the stored chain from its anchor to its head (keyed events with the engine's audit key);
    return the first problem, or None. ``mode`` counts what was checked how."""
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        # one snapshot for head and events, so concurrent appends cannot look like tampering
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    head = session.get(AuditHead, 1)
    anchor = latest_anchor(session)
    after = anchor.seq if anchor else 0
    # plain rows, not ORM objects: a third of the time over a million events
    events = session.execute(
        sa.select(sa.inspect(AuditEvent).local_table).where(col(AuditEvent.seq) > after).order_by(col(AuditEvent.seq))
    ).yield_per(2000)
    if head is None:
        first = next(iter(events), None)
        return None if first is None else ChainProblem(first.seq, "the chain head row is missing")
    return verify_events(
        events,
        head=head,
        anchor=anchor.hash if anchor else GENESIS,
        first_seq=after + 1,
        key=session_key(session),
        mode=mode,
    )


def head_summary(session: Session) -> tuple[int, str]:
    """(number of the last event, its hash): the value worth publishing outside the database."""
    head = session.get(AuditHead, 1)
    return (head.seq, head.last_hash) if head else (0, GENESIS)


def events_for(session: Session, promotion_id: str) -> list[AuditEvent]:
    return list(
        session.exec(
            select(AuditEvent).where(col(AuditEvent.promotion_id) == promotion_id).order_by(col(AuditEvent.seq))
        )
    )
