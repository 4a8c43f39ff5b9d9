"""Engine and sessions. SQLite file by default, PostgreSQL through DATABASE_URL."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session


def normalise_url(url: str) -> str:
    """Accept the URLs people paste: postgres:// and postgresql:// mean psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


AUDIT_KEY = "promobot.audit_key"  # where a connection carries the audit chain's HMAC key (Connection.info)


def _carry_audit_key(engine: Engine, audit_key: bytes | None) -> None:
    """Every connection of ``engine`` knows the audit key (storage.audit reads it there); never logged."""
    if audit_key:

        @event.listens_for(engine, "connect")
        def _key(_dbapi_conn, record):
            record.info[AUDIT_KEY] = audit_key


def create_db_engine(url: str, *, audit_key: bytes | None = None) -> Engine:
    """The database engine; with ``audit_key`` the audit trail is an HMAC chain (PROMOBOT_AUDIT_KEY)."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _carry_audit_key(engine, audit_key)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # WAL lets the bot, `promobot report` and a second process share the file.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        # pysqlite's own transaction handling defers BEGIN. A unit of work (``transaction``)
        # takes the write lock up front, so read-then-write transactions from two processes
        # cannot deadlock; plain reads stay deferred and never wait for a writer (WAL).
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):
            immediate = conn.get_execution_options().get("write_transaction")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        # SQLite has one writer at a time. Its busy handler waits by sleeping 1, 2, 5 … 100 ms and trying
        # again, so threads of one process that queue for the write lock wait far longer than the writes
        # take; they queue on a lock of their own instead (other processes still meet the busy handler)
        _WRITERS[engine] = threading.RLock()
        return engine
    # a connection each for the readers, the urgent work, the writers' threads and the gate loops
    engine = sa.create_engine(url, pool_size=10, max_overflow=10)
    _carry_audit_key(engine, audit_key)
    _ping_when_idle(engine)
    return engine


PING_AFTER_IDLE = 2.0  # seconds a pooled connection may sit unused before its next checkout pings it
_RETURNED = "promobot.returned"  # when the connection went back to the pool (ConnectionPoolEntry.info)


def _ping_when_idle(engine: Engine) -> None:
    """What ``pool_pre_ping`` does, for connections that sat idle: it pinged at every checkout, a round trip
    before each read, and under load each round trip also waits for the interpreter's lock. A connection
    back in use within ``PING_AFTER_IDLE`` is not pinged; one that was idle longer (the server may have
    restarted or dropped it meanwhile) is, and a dead one is replaced before anybody uses it. A server that
    goes away while connections are in use fails those statements, and SQLAlchemy then invalidates the
    whole pool."""

    @event.listens_for(engine, "connect")
    def _connected(_dbapi_conn, record):
        record.info[_RETURNED] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn, record):
        record.info[_RETURNED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy):
        returned = record.info.get(_RETURNED)
        if returned is not None and time.monotonic() - returned < PING_AFTER_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"an idle connection did not answer: {type(exc).__name__}") from exc
        if not alive:
            raise sa.exc.DisconnectionError("an idle connection did not answer")


_WRITERS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()


_TOGETHER = threading.local()  # engine -> the connection that reads of this thread share (reads_together)


@contextmanager
def reading(engine: Engine) -> Iterator[sa.Connection]:
    """A connection for reads that need no transaction of their own. On PostgreSQL it is in autocommit: a
    transaction there cost a BEGIN and a ROLLBACK round trip around each read, and under READ COMMITTED
    every statement sees its own snapshot anyway. (SQLite's plain reads are deferred already.) Inside
    ``reads_together`` it is the one connection those reads share."""
    shared = getattr(_TOGETHER, "connections", {}).get(engine)
    if shared is not None:
        yield shared
        return
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


@contextmanager
def reads_together(engine: Engine) -> Iterator[None]:
    """Every ``reading(engine)`` in this block, on this thread, uses one connection: a card's evidence is
    eight small reads, and a checkout from the pool and back cost about as much as each read."""
    connections = _TOGETHER.__dict__.setdefault("connections", {})
    if engine in connections:
        yield
        return
    with reading(engine) as conn:
        connections[engine] = conn
        try:
            yield
        finally:
            del connections[engine]


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back on error."""
    writer = _WRITERS.get(engine)
    with (
        writer if writer is not None else nullcontext(),
        Session(engine.execution_options(write_transaction=True), expire_on_commit=False) as session,
    ):
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def redact_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database url>"


def rowcount(result: sa.Result[Any]) -> int:
    """How many rows an UPDATE or DELETE touched (the compare-and-set's answer)."""
    return cast(sa.CursorResult[Any], result).rowcount
