"""Connections from the pool: on PostgreSQL one the server dropped while it sat idle is replaced before use;
reads that go together share one."""

from __future__ import annotations

import time

import sqlalchemy as sa

from storage import db
from storage.db import create_db_engine, reads_together
from storage.ledger import SqlLedger
from storage.migrate import upgrade
from tests.harness import POSTGRES_URL, PostgresSchema


def test_an_idle_connection_the_server_dropped_is_replaced_before_anyone_uses_it(monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.05)
    schema = PostgresSchema()
    engine = create_db_engine(schema.url)
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            first = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        # the server drops it while it waits in the pool (a restart, an idle-session timeout)
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar() is True
        time.sleep(0.2)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != first
    finally:
        engine.dispose()
        admin.dispose()
        schema.drop()


def test_reads_together_share_one_connection(database_url):
    """A card's evidence is several reads; inside ``reads_together`` they take one connection from the pool."""
    engine = create_db_engine(database_url)
    upgrade(engine)
    ledger = SqlLedger(engine)
    checkouts = []
    sa.event.listen(engine, "checkout", lambda *_: checkouts.append(1))

    def card_reads() -> None:
        ledger.artifact("api-gateway", "7a3f9c2")
        ledger.deployments("api-gateway", "staging", tag="7a3f9c2", limit=5)
        ledger.verifications("api-gateway", "staging", tag="7a3f9c2", limit=5)
        ledger.hold("api-gateway", "7a3f9c2")

    try:
        card_reads()
        assert len(checkouts) == 4
        checkouts.clear()
        with reads_together(engine):
            card_reads()
            with reads_together(engine):  # nested: still the one connection
                card_reads()
        assert len(checkouts) == 1
        card_reads()  # and afterwards each read takes its own again
        assert len(checkouts) == 5
    finally:
        engine.dispose()
