"""Schema migrations (Alembic), applied by `promobot db upgrade` and at start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Safe to run from several replicas at once on PostgreSQL."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # one migrator at a time; the others wait, then find nothing to do
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7268041)")
        command.upgrade(_config(conn), revision)


def revision(engine: Engine, message: str) -> None:
    """Write a new migration from the difference between the tables and the database (developers)."""
    with engine.begin() as conn:
        command.revision(_config(conn), message=message, autogenerate=True)


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
