"""A batch of approvals and revocations read and written in as few trips to the database as it allows.

The approval writer (``bot.engine.approval_writer``) runs on a thread of its own while the event loop acks
Slack. Each time a statement waits on the database, or SQLite steps to its next row, that thread lets go of
the interpreter's lock, and under load it waits to take it back: in runs of bench/ack_bench.py on
PostgreSQL, a batch of eight statements one after another took 48 ms (p50), and a stand-in batch that only
let go of the lock 30 times took 52 ms (9 times: 12 ms). So the batch is two phases, each as few waits as the
database allows:

- ``lock``: the batch's promotions that still wait for approval, locked in id order and bumped (as
  ``lock_row`` does for one), who has approved them, and the audit chain's head, locked;
- ``write``: the approvals revoked deleted, the new ones inserted, the events chained after the head, and
  the head moved to the last of them. A delete or insert that does not touch exactly the rows it should
  raises ``ChangedUnderLock`` (the rows are locked, so it cannot happen): the caller's transaction fails.

On PostgreSQL each phase is one round trip, in psycopg's pipeline mode (the commit is a third). On SQLite,
where each row a statement returns is a step of its own, a phase reads one row per statement (the ids and
approvers as one JSON array) and writes with multi-row statements that return nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from psycopg.types.json import Json
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlmodel import Session

from storage import audit
from storage.db import rowcount
from storage.models import Approval, Promotion
from storage.statuses import Decision

Pair = tuple[str, str]  # (promotion id, approver)

_APPROVAL = Approval.__table__  # type: ignore[attr-defined]
_AP = _APPROVAL.c
_PROMOTION = Promotion.__table__  # type: ignore[attr-defined]
_P = _PROMOTION.c
_APPROVE = Decision.APPROVE.value


class ChangedUnderLock(RuntimeError):
    """A delete or insert touched other rows than the locked ones said it would."""


@dataclass
class Locked:
    open: set[str]  # the batch's promotions still waiting for approval: locked, and their version bumped
    approvals: set[Pair]  # who has approved each of them
    head: tuple[int, str]  # the audit chain's last seq and hash, its head row locked


@dataclass
class Changes:
    """What a batch writes under the locks of ``Locked``."""

    revoked: set[Pair]  # approvals to delete
    approved: dict[Pair, datetime]  # approvals to insert, with when they were given
    events: list[dict[str, Any]]  # the audit events, each the keyword arguments of ``audit.append``
    head: tuple[int, str]  # the chain's head as locked: the events follow it

    def check(self, deleted: int | None, inserted: int | None) -> None:
        """Raise ``ChangedUnderLock`` unless the deletes and inserts touched as many rows as they should."""
        if deleted is not None and deleted != len(self.revoked):
            raise ChangedUnderLock("approvals to revoke changed under the promotions' row locks")
        if inserted is not None and inserted != len(self.approved):
            raise ChangedUnderLock("approvals changed under the promotions' row locks")


class Batch(Protocol):
    """The two phases on one dialect, inside the caller's transaction."""

    def lock(self, s: Session, ids: list[str], waiting: str) -> Locked: ...

    def write(self, s: Session, changes: Changes) -> None: ...


def for_dialect(dialect: Dialect) -> Batch:
    return PipelinedBatch(dialect) if dialect.name == "postgresql" else SqliteBatch()


def _compiled(stmt: sa.ClauseElement, dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """The statement's SQL for the driver, and the values of the binds it has of its own."""
    compiled = stmt.compile(dialect=dialect)
    return str(compiled), dict(compiled.params)


class PipelinedBatch:
    """PostgreSQL: each phase's statements go together in psycopg's pipeline mode, one round trip."""

    def __init__(self, dialect: Dialect) -> None:
        ids = sa.bindparam("ids", type_=postgresql.ARRAY(sa.String))
        locked = _PROMOTION.alias("locked")
        self._lock = _compiled(
            sa.update(_PROMOTION)
            .where(
                _P.id.in_(
                    sa.select(locked.c.id)
                    .where(locked.c.id == sa.any_(ids), locked.c.status == sa.bindparam("waiting"))
                    .order_by(locked.c.id)  # in id order: two replicas' batches never wait on each other
                    .with_for_update()
                )
            )
            .values(version=_P.version + 1)
            .returning(_P.id),
            dialect,
        )
        self._approvers = _compiled(
            sa.select(_AP.promotion_id, _AP.approver).where(_AP.promotion_id == sa.any_(ids), _AP.decision == _APPROVE),
            dialect,
        )
        self._head = _compiled(audit.LOCK_HEAD, dialect)
        self._delete = _compiled(_delete_revoked(), dialect)
        self._write = _compiled(_write_at_once(), dialect)

    def lock(self, s: Session, ids: list[str], waiting: str) -> Locked:
        raw = _driver_connection(s)
        with raw.pipeline():
            lock = raw.execute(self._lock[0], {**self._lock[1], "ids": ids, "waiting": waiting})
            approvers = raw.execute(self._approvers[0], {**self._approvers[1], "ids": ids})
            head = raw.execute(self._head[0], self._head[1])
            open_ = {row[0] for row in lock.fetchall()}
            approvals = {(pid, user) for pid, user in approvers.fetchall() if pid in open_}
            tip = head.fetchone()
        if tip is None:  # the very first event: the head row is made
            return Locked(open_, approvals, audit.lock_head(s))
        return Locked(open_, approvals, (tip[0], tip[1] or audit.GENESIS))

    def write(self, s: Session, changes: Changes) -> None:
        head, key = changes.head, audit.session_key(s)
        rows = audit.chained(changes.events, after=head, key=key)
        added = list(changes.approved.items())
        if any(at.tzinfo is None for _, at in added):  # sent to the driver as they are: refused as UTCDateTime does
            raise ValueError("naive datetime given to a UTC column")
        params = {
            **self._write[1],
            "added_pids": [pid for (pid, _), _ in added],
            "added_users": [user for (_, user), _ in added],
            "added_ats": [at for _, at in added],
            "keyed": key is not None,
            "new_seq": rows[-1]["seq"] if rows else head[0],
            "new_hash": rows[-1]["hash"] if rows else head[1],
            **{f"ev_{c}": [row[c] for row in rows] for c in _EVENT_ARRAYS},
        }
        params["ev_detail"] = [Json(d) for d in params["ev_detail"]]
        raw = _driver_connection(s)
        deleted = None
        with raw.pipeline():
            if changes.revoked:
                gone = sorted(changes.revoked)
                deleted = raw.execute(
                    self._delete[0],
                    {**self._delete[1], "gone_pids": [p for p, _ in gone], "gone_users": [u for _, u in gone]},
                )
            written = raw.execute(self._write[0], params)
            (inserted,) = written.fetchone()
        changes.check(None if deleted is None else deleted.rowcount, inserted)


_EVENT_ARRAYS = (
    "seq",
    "at",
    "actor",
    "action",
    "promotion_id",
    "service",
    "environment",
    "detail",
    "prev_hash",
    "hash",
)


def _unnest(name: str, item: sa.types.TypeEngine[Any]) -> sa.ColumnElement[Any]:
    return sa.func.unnest(sa.bindparam(name, type_=postgresql.ARRAY(item)))


def _write_at_once() -> sa.Select[Any]:
    """The write phase after the deletes, as one statement (PostgreSQL runs each data-modifying WITH once): the
    new approvals inserted, the events added and the head moved; it answers how many approvals it inserted.
    The arrays of each list are unnested side by side, a row per index. (The revoked approvals are deleted by
    a statement before it: the parts of one statement run in no set order, and an approval revoked and given
    again in one batch is deleted and inserted.)"""
    inserted = (
        postgresql.insert(_APPROVAL)
        .from_select(
            ["promotion_id", "approver", "decision", "decided_at"],
            sa.select(
                _unnest("added_pids", sa.String()),
                _unnest("added_users", sa.String()),
                sa.literal(_APPROVE),
                _unnest("added_ats", sa.DateTime(timezone=True)),
            ),
        )
        .on_conflict_do_nothing(index_elements=["promotion_id", "approver"])
        .returning(_AP.id)
        .cte("inserted")
    )
    kinds = {c.name: c.type for c in audit.EVENTS.c}
    added_events = (
        audit.EVENTS.insert()
        .from_select(
            [*_EVENT_ARRAYS, "keyed"],
            sa.select(
                *(_unnest(f"ev_{c}", sa.JSON() if c == "detail" else kinds[c]) for c in _EVENT_ARRAYS),
                sa.bindparam("keyed", type_=sa.Boolean()),
            ),
        )
        .returning(audit.EVENTS.c.seq)
        .cte("added_events")
    )
    moved = audit.MOVE_HEAD.returning(sa.literal(1)).cte("moved")
    count = lambda cte: sa.select(sa.func.count()).select_from(cte).scalar_subquery()  # noqa: E731
    return sa.select(count(inserted)).add_cte(added_events, moved)


def _delete_revoked() -> sa.Delete:
    gone = sa.select(_unnest("gone_pids", sa.String()).label("pid"), _unnest("gone_users", sa.String()).label("usr"))
    return sa.delete(_APPROVAL).where(_AP.decision == _APPROVE, sa.tuple_(_AP.promotion_id, _AP.approver).in_(gone))


def _driver_connection(s: Session) -> Any:
    """The psycopg connection under the session's transaction."""
    return s.connection().connection.driver_connection


class SqliteBatch:
    """SQLite: a transaction here holds the database's write lock from its BEGIN IMMEDIATE, so nothing else
    writes meanwhile; every statement reads at most one row, or writes many rows at once."""

    def lock(self, s: Session, ids: list[str], waiting: str) -> Locked:
        found = s.execute(
            sa.select(sa.func.json_group_array(_P.id)).where(_P.id.in_(ids), _P.status == waiting)
        ).scalar_one()
        open_ = set(json.loads(found))
        approvals: set[Pair] = set()
        if open_:
            s.execute(sa.update(_PROMOTION).where(_P.id.in_(sorted(open_))).values(version=_P.version + 1))
            pairs = s.execute(
                sa.select(sa.func.json_group_array(sa.func.json_array(_AP.promotion_id, _AP.approver))).where(
                    _AP.promotion_id.in_(sorted(open_)), _AP.decision == _APPROVE
                )
            ).scalar_one()
            approvals = {(pid, user) for pid, user in json.loads(pairs)}
        return Locked(open_, approvals, audit.lock_head(s))

    def write(self, s: Session, changes: Changes) -> None:
        if changes.revoked:
            gone = s.execute(
                sa.delete(_APPROVAL).where(
                    sa.tuple_(_AP.promotion_id, _AP.approver).in_(sorted(changes.revoked)), _AP.decision == _APPROVE
                )
            )
            changes.check(rowcount(gone), None)
        if changes.approved:
            added = s.execute(
                sqlite.insert(_APPROVAL)
                .values(
                    [
                        dict(promotion_id=pid, approver=user, decision=_APPROVE, decided_at=at)
                        for (pid, user), at in changes.approved.items()
                    ]
                )
                .on_conflict_do_nothing(index_elements=["promotion_id", "approver"])
            )
            changes.check(None, rowcount(added))
        rows = audit.chained(changes.events, after=changes.head, key=audit.session_key(s))
        if rows:
            s.execute(audit.EVENTS.insert().values(rows))
            s.execute(audit.MOVE_HEAD, {"new_seq": rows[-1]["seq"], "new_hash": rows[-1]["hash"]})
