"""The audit trail: append-only and hash-chained.

Each event's hash covers its content and the previous event's hash, so an
edit, a deletion or a reordering breaks the chain at that event. Writers
first update the single ``audit_head`` row, which takes a row lock on
PostgreSQL (and the write lock on SQLite): concurrent writers are serialised
and the chain stays linear.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import sqlalchemy as sa
from sqlmodel import Session, select

from storage.models import AuditEvent, AuditHead

GENESIS = "0" * 64


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def event_hash(*, seq: int, at: datetime, actor: str, action: str, promotion_id: str | None,
               service: str | None, environment: str | None, detail: dict | None, prev_hash: str) -> str:
    body = _canonical({
        "seq": seq, "at": at.isoformat(timespec="microseconds"), "actor": actor, "action": action,
        "promotion_id": promotion_id, "service": service, "environment": environment,
        "detail": detail or {}, "prev_hash": prev_hash,
    })
    return hashlib.sha256(body.encode()).hexdigest()


def append(session: Session, *, at: datetime, actor: str, action: str, promotion_id: str | None = None,
           service: str | None = None, environment: str | None = None,
           detail: dict | None = None) -> AuditEvent:
    """Add one event at the tip of the chain, inside the caller's transaction."""
    # Taking the head row's lock first is what serialises writers.
    updated = session.execute(sa.update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1))
    if updated.rowcount == 0:
        session.add(AuditHead(id=1, seq=1, last_hash=GENESIS))
        session.flush()
    head = session.execute(select(AuditHead.seq, AuditHead.last_hash).where(AuditHead.id == 1)).one()
    seq, prev = head.seq, head.last_hash or GENESIS
    at = at.astimezone(timezone.utc)
    detail = json.loads(_canonical(detail or {}))
    digest = event_hash(seq=seq, at=at, actor=actor, action=action, promotion_id=promotion_id,
                        service=service, environment=environment, detail=detail, prev_hash=prev)
    ev = AuditEvent(seq=seq, at=at, actor=actor, action=action, promotion_id=promotion_id,
                    service=service, environment=environment, detail=detail, prev_hash=prev, hash=digest)
    session.add(ev)
    session.execute(sa.update(AuditHead).where(AuditHead.id == 1).values(last_hash=digest))
    session.flush()
    return ev


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"event {self.seq}: {self.problem}"


def verify_events(events: Iterable[AuditEvent], *, head: AuditHead | None = None,
                  anchor: str = GENESIS, first_seq: int = 1) -> ChainProblem | None:
    """Recompute the chain; return the first event that was altered, removed or reordered."""
    prev, expected_seq = anchor, first_seq
    last = None
    for ev in events:
        if ev.seq != expected_seq:
            what = "missing (removed)" if ev.seq > expected_seq else "out of order"
            return ChainProblem(expected_seq, f"{what}; found event {ev.seq} where {expected_seq} belongs")
        if ev.prev_hash != prev:
            return ChainProblem(ev.seq, "its link to the previous event does not match (reordered or removed before it)")
        recomputed = event_hash(seq=ev.seq, at=ev.at, actor=ev.actor, action=ev.action,
                                promotion_id=ev.promotion_id, service=ev.service,
                                environment=ev.environment, detail=ev.detail, prev_hash=ev.prev_hash)
        if recomputed != ev.hash:
            return ChainProblem(ev.seq, "content was altered (hash does not match)")
        prev, expected_seq, last = ev.hash, expected_seq + 1, ev
    if head is not None and head.seq >= expected_seq:
        return ChainProblem(expected_seq, f"missing (truncated): the chain head records {head.seq} events")
    if head is not None and last is not None and head.last_hash != last.hash:
        return ChainProblem(last.seq, "the chain head does not point at the last event")
    return None


def verify(session: Session) -> ChainProblem | None:
    head = session.get(AuditHead, 1)
    events = session.exec(select(AuditEvent).order_by(AuditEvent.seq)).yield_per(1000)
    return verify_events(events, head=head)


def events_for(session: Session, promotion_id: str) -> list[AuditEvent]:
    return list(session.exec(select(AuditEvent).where(AuditEvent.promotion_id == promotion_id)
                             .order_by(AuditEvent.seq)))
