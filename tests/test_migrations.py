"""The Alembic migrations build exactly the tables ``storage/models.py`` declares (on SQLite and PostgreSQL),
so a column added to a model without its migration, or the reverse, fails here."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (the tables)
from storage import migrate
from storage.db import create_db_engine


def test_the_migrations_build_exactly_the_models_tables(database_url):
    engine = create_db_engine(database_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
            columns = {c["name"] for c in sa.inspect(conn).get_columns("promotion")}
        assert {"expedited", "expedite_reason", "preempts"} <= columns
    finally:
        engine.dispose()
