"""A batch of approvals and revocations read and written in as few trips to the database as it allows.

The approval writer (``bot.engine.approval_writer``) runs on a thread of its own while the event loop acks
Slack. Each time a statement waits on the database, or SQLite steps to its next row, that thread lets go of
the interpreter's lock, and under load it waits to take it back: in runs of bench/ack_bench.py on
PostgreSQL, a batch of eight statements one after another took 48 ms (p50), and a stand-in batch that only
let go of the lock 30 times took 52 ms (9 times: 12 ms). So a batch is one transaction (``Batch.begin``) of
two phases, each as few waits as the database allows:

- ``lock``: the batch's promotions that still wait for approval, locked in id order and bumped (as
  ``lock_row`` does for one), who has approved them, and the audit chain's head, locked;
- ``write``: the approvals revoked deleted, the new ones inserted, the events chained after the head, and
  the head moved to the last of them. A delete or insert that does not touch exactly the rows it should
  raises ``ChangedUnderLock`` (the rows are locked, so it cannot happen): the transaction fails.

On PostgreSQL the transaction is three round trips in psycopg's pipeline mode: its BEGIN goes with the lock
phase, the write phase is one, its COMMIT one. (In a transaction psycopg opens itself, the BEGIN, each
phase and the COMMIT each waited for the server: six round trips.) On SQLite, where each row a statement
returns is a step of its own, the lock phase is one statement that reads one row (the open ids, their
approvers and the head, as JSON) and the bump, and the write phase multi-row statements that return
nothing; each of fixed text, the batch's ids and rows bound as one JSON array.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from psycopg.types.json import Json
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect, Engine
from sqlmodel import Session

from storage import audit
from storage.db import AUDIT_KEY, rowcount, transaction
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


_E = audit.EVENTS.c
# an ask's own audited event: written in the same transaction as its approval (or revocation), so found, it
# says that transaction committed, and with what count
_OWN_EVENTS = sa.select(_E.at, _E.detail).where(
    _E.promotion_id == sa.bindparam("id"), _E.actor == sa.bindparam("user"), _E.action == sa.bindparam("action")
)


class Tx(Protocol):
    """One batch's transaction: ``lock``, then ``write`` (once, or not at all)."""

    def lock(self, ids: list[str], waiting: str) -> Locked: ...

    def own_events(self, promotion_id: str, actor: str, action: str) -> list[tuple[datetime | None, Any]]:
        """(at, detail) of each audited ``action`` of ``actor`` on the promotion."""
        ...

    def write(self, changes: Changes) -> None: ...


class Batch(Protocol):
    """A batch's transaction on one dialect: committed when the block ends, rolled back if it raises."""

    def begin(self, engine: Engine) -> AbstractContextManager[Tx]: ...


def for_dialect(dialect: Dialect) -> Batch:
    return PipelinedBatch(dialect) if dialect.name == "postgresql" else SqliteBatch(dialect)


def _compiled(stmt: sa.ClauseElement, dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """The statement's SQL for the driver, and the values of the binds it has of its own."""
    compiled = stmt.compile(dialect=dialect)
    return str(compiled), dict(compiled.params)


class PipelinedBatch:
    """PostgreSQL: a batch's transaction in psycopg's pipeline mode, three round trips (BEGIN and the lock
    phase, the write phase, COMMIT)."""

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

        self._own_events = _compiled(_OWN_EVENTS, dialect)
        self._first_head = _compiled(
            postgresql.insert(audit.HEAD).values(id=1, seq=0, last_hash=audit.GENESIS).on_conflict_do_nothing(),
            dialect,
        )

    @contextmanager
    def begin(self, engine: Engine) -> Iterator[Tx]:
        """A transaction of its own on a pooled connection, in autocommit so that psycopg adds no BEGIN of
        its own (one it adds, it waits for): BEGIN and COMMIT go in the pipeline with the statements."""
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")  # (undone when it goes back to the pool)
            raw: Any = conn.connection.driver_connection
            try:
                with raw.pipeline():
                    raw.execute("BEGIN")
                    yield _PipelinedTx(self, raw, conn.info.get(AUDIT_KEY))
                    raw.execute("COMMIT")
            except BaseException:
                _roll_back(raw)
                raise


class _PipelinedTx:
    def __init__(self, batch: PipelinedBatch, raw: Any, key: bytes | None) -> None:
        self._b, self._raw, self._key = batch, raw, key

    def _run(self, statement: tuple[str, dict[str, Any]], **params: Any) -> Any:
        return self._raw.execute(statement[0], {**statement[1], **params})

    def lock(self, ids: list[str], waiting: str) -> Locked:
        b = self._b
        lock = self._run(b._lock, ids=ids, waiting=waiting)
        approvers = self._run(b._approvers, ids=ids)
        head = self._run(b._head)
        open_ = {row[0] for row in lock.fetchall()}  # (the BEGIN and these three: one round trip)
        approvals = {(pid, user) for pid, user in approvers.fetchall() if pid in open_}
        tip = head.fetchone()
        if tip is None:  # the very first event: the head row is made, then locked
            self._run(b._first_head)
            tip = self._run(b._head).fetchone()
        return Locked(open_, approvals, (tip[0], tip[1] or audit.GENESIS))

    def own_events(self, promotion_id: str, actor: str, action: str) -> list[tuple[datetime | None, Any]]:
        return [tuple(row) for row in self._run(self._b._own_events, id=promotion_id, user=actor, action=action)]

    def write(self, changes: Changes) -> None:
        b, head = self._b, changes.head
        rows = audit.chained(changes.events, after=head, key=self._key)
        added = list(changes.approved.items())
        if any(at.tzinfo is None for _, at in added):  # sent to the driver as they are: refused as UTCDateTime does
            raise ValueError("naive datetime given to a UTC column")
        params: dict[str, Any] = {
            "added_pids": [pid for (pid, _), _ in added],
            "added_users": [user for (_, user), _ in added],
            "added_ats": [at for _, at in added],
            "keyed": self._key is not None,
            "new_seq": rows[-1]["seq"] if rows else head[0],
            "new_hash": rows[-1]["hash"] if rows else head[1],
            **{f"ev_{c}": [row[c] for row in rows] for c in _EVENT_ARRAYS},
        }
        params["ev_detail"] = [Json(d) for d in params["ev_detail"]]
        deleted = None
        if changes.revoked:
            gone = sorted(changes.revoked)
            deleted = self._run(b._delete, gone_pids=[p for p, _ in gone], gone_users=[u for _, u in gone])
        (inserted,) = self._run(b._write, **params).fetchone()  # (one round trip, the delete with it)
        changes.check(None if deleted is None else deleted.rowcount, inserted)


def _roll_back(raw: Any) -> None:
    """End the transaction a batch began, if it is still open (psycopg's rollback, which sends ROLLBACK only
    then, in autocommit too); a connection that broke has none to end."""
    with suppress(Exception):
        raw.rollback()


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


class SqliteBatch:
    """SQLite: a transaction here holds the database's write lock from its BEGIN IMMEDIATE, so nothing else
    writes meanwhile. Every statement is the same text whatever the batch holds (the ids and rows go in as
    one JSON array each, read back with ``json_each``), so SQLite prepares it once per connection: a
    statement whose IN list or VALUES grew with the batch was prepared again each time, and each prepare
    let go of the interpreter's lock (under load, p50 1.0-1.8 ms a statement, against 0.04 ms for the
    statements of fixed text). Each reads at most one row, or writes many rows at once."""

    def __init__(self, dialect: Dialect) -> None:
        stored_at = _AP.decided_at.type.dialect_impl(dialect).bind_processor(dialect)
        assert stored_at is not None
        self.stored_at = stored_at  # a UTC datetime as SQLAlchemy stores it (text); a naive one is refused

    @contextmanager
    def begin(self, engine: Engine) -> Iterator[Tx]:
        with transaction(engine) as s:
            yield _SqliteTx(self, s)


def _from_json(count: int, *constants: str) -> str:
    """The first ``count`` items of each row of the JSON array bound as ``:rows``, then ``constants``."""
    picked = [f"json_extract(value, '$[{i}]')" for i in range(count)] + list(constants)
    return f"SELECT {', '.join(picked)} FROM json_each(:rows) WHERE true"  # (WHERE: an upsert's SELECT needs one)


_P_NAME, _AP_NAME, _HEAD_NAME = _PROMOTION.name, _APPROVAL.name, audit.HEAD.name
_SQLITE_LOCK = sa.text(
    f"SELECT (SELECT json_group_array(id) FROM {_P_NAME}"
    f" WHERE id IN (SELECT value FROM json_each(:ids)) AND status = :waiting),"
    f" (SELECT json_group_array(json_array(promotion_id, approver)) FROM {_AP_NAME}"
    f" WHERE promotion_id IN (SELECT value FROM json_each(:ids)) AND decision = :approve),"
    f" (SELECT json_array(seq, last_hash) FROM {_HEAD_NAME} WHERE id = 1)"
)
_SQLITE_BUMP = sa.text(f"UPDATE {_P_NAME} SET version = version + 1 WHERE id IN (SELECT value FROM json_each(:ids))")
_SQLITE_REVOKE = sa.text(
    f"DELETE FROM {_AP_NAME} WHERE decision = :approve AND (promotion_id, approver) IN"
    " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:rows))"
)
_SQLITE_APPROVE = sa.text(
    f"INSERT INTO {_AP_NAME} (promotion_id, approver, decided_at, decision) "
    + _from_json(3, ":approve")
    + " ON CONFLICT (promotion_id, approver) DO NOTHING"
)
_EVENT_COLUMNS = [*_EVENT_ARRAYS, "keyed"]
_SQLITE_EVENTS = sa.text(
    f"INSERT INTO {audit.EVENTS.name} ({', '.join(_EVENT_COLUMNS)}) " + _from_json(len(_EVENT_COLUMNS))
)


class _SqliteTx:
    def __init__(self, batch: SqliteBatch, s: Session) -> None:
        self.b, self.s = batch, s

    def lock(self, ids: list[str], waiting: str) -> Locked:
        s = self.s
        found, pairs, head = s.execute(
            _SQLITE_LOCK, {"ids": json.dumps(ids), "waiting": waiting, "approve": _APPROVE}
        ).one()
        open_ = set(json.loads(found))
        approvals = {(pid, user) for pid, user in json.loads(pairs) if pid in open_}
        if open_:
            s.execute(_SQLITE_BUMP, {"ids": json.dumps(sorted(open_))})
        if head is None:  # the very first event: the head row is made
            return Locked(open_, approvals, audit.lock_head(s))
        seq, last = json.loads(head)
        return Locked(open_, approvals, (seq, last or audit.GENESIS))

    def own_events(self, promotion_id: str, actor: str, action: str) -> list[tuple[datetime | None, Any]]:
        found = self.s.execute(_OWN_EVENTS, {"id": promotion_id, "user": actor, "action": action})
        return [(at, detail) for at, detail in found]

    def write(self, changes: Changes) -> None:
        s, b = self.s, self.b
        if changes.revoked:
            gone = s.execute(_SQLITE_REVOKE, {"rows": json.dumps(sorted(changes.revoked)), "approve": _APPROVE})
            changes.check(rowcount(gone), None)
        if changes.approved:
            rows = [[pid, user, b.stored_at(at)] for (pid, user), at in changes.approved.items()]
            added = s.execute(_SQLITE_APPROVE, {"rows": json.dumps(rows), "approve": _APPROVE})
            changes.check(None, rowcount(added))
        events = audit.chained(changes.events, after=changes.head, key=audit.session_key(s))
        if events:
            stored = [
                [
                    b.stored_at(e[c]) if c == "at" else e[c]  # (detail: the object itself, stored as JSON text)
                    for c in _EVENT_COLUMNS
                ]
                for e in events
            ]
            s.execute(_SQLITE_EVENTS, {"rows": json.dumps(stored)})
            s.execute(audit.MOVE_HEAD, {"new_seq": events[-1]["seq"], "new_hash": events[-1]["hash"]})
