"""Portable SQL pieces the metrics share: durations and local days that SQLite and PostgreSQL compute
alike, and the per-promotion rows the aggregates read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from storage.models import Artifact, Deployment, Promotion, Verification
from storage.statuses import DeploymentStatus, VerificationResult

P, D, V, A = (sa.inspect(model).local_table for model in (Promotion, Deployment, Verification, Artifact))
WEEK = timedelta(days=7)


class Seconds(FunctionElement):
    """Seconds from the first timestamp to the second."""

    type = sa.Float()
    inherit_cache = True


@compiles(Seconds, "sqlite")
def _seconds_sqlite(element, compiler, **kw):
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    # julianday is exact to the millisecond; rounding drops the float noise of the subtraction
    return f"round((julianday({end}) - julianday({start})) * 86400.0, 3)"


@compiles(Seconds, "postgresql")
def _seconds_postgresql(element, compiler, **kw):
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS DOUBLE PRECISION)"


class LocalDay(FunctionElement):
    """'YYYY-MM-DD' of a UTC timestamp shifted by a whole number of seconds (a time zone's offset)."""

    type = sa.String()
    inherit_cache = True


@compiles(LocalDay, "sqlite")
def _day_sqlite(element, compiler, **kw):
    ts, offset = (compiler.process(c, **kw) for c in element.clauses)
    return f"date({ts}, ({offset}) || ' seconds')"


@compiles(LocalDay, "postgresql")
def _day_postgresql(element, compiler, **kw):
    ts, offset = (compiler.process(c, **kw) for c in element.clauses)
    return f"to_char(({ts} AT TIME ZONE 'UTC') + ({offset}) * INTERVAL '1 second', 'YYYY-MM-DD')"


def local_day(ts: sa.ColumnElement, utc_offset: timedelta) -> LocalDay:
    return LocalDay(ts, sa.literal_column(str(int(utc_offset.total_seconds()))))


def count_if(condition: sa.ColumnElement) -> sa.ColumnElement:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def between(column: sa.ColumnElement, start: datetime, end: datetime) -> sa.ColumnElement:
    return (column >= start) & (column < end)


def only(query: sa.Select, column: sa.ColumnElement, services: Sequence[str] | None) -> sa.Select:
    return query.where(column.in_(list(services))) if services else query


def frequency_start(start: datetime, end: datetime) -> datetime:
    """Where the per-week rates start counting: the window, or the week before ``end`` if longer."""
    return min(start, end - WEEK)


def materialised(query: sa.Select) -> sa.CTE:
    """Per-row durations as a materialised CTE: computed once, however often the aggregate reads them
    (inlined, each reference would rerun the per-row correlated subquery)."""
    return query.cte().prefix_with("MATERIALIZED")


def time_to_promote_rows(start: datetime | None, end: datetime | None, services: Sequence[str] | None) -> sa.CTE:
    """(service, environment, deployed_at, seconds) per promotion deployed in the window (all time without one)."""
    ready = (
        sa.select(sa.func.min(V.c.finished_at))
        .where(
            V.c.service == P.c.service,
            V.c.environment == P.c.source_environment,
            V.c.tag == P.c.tag,
            V.c.result == VerificationResult.PASSED,
            V.c.finished_at <= D.c.finished_at,
        )
        .scalar_subquery()
    )
    query = (
        sa.select(
            P.c.service,
            P.c.target_environment.label("environment"),
            D.c.finished_at.label("deployed_at"),
            Seconds(ready, D.c.finished_at).label("seconds"),
        )
        .select_from(D.join(P, P.c.id == D.c.promotion_id))
        .where(D.c.status == DeploymentStatus.SUCCESS, P.c.kind == "promotion", P.c.source_environment.is_not(None))
    )
    if start is not None and end is not None:
        query = query.where(between(D.c.finished_at, start, end))
    return materialised(only(query, D.c.service, services))


def approval_rows(start: datetime | None, end: datetime | None, services: Sequence[str] | None) -> sa.CTE:
    query = sa.select(
        P.c.service,
        P.c.target_environment.label("environment"),
        Seconds(P.c.requested_at, P.c.approved_at).label("seconds"),
    ).where(P.c.required_approvals > 0, P.c.approved_at.is_not(None))
    if start is not None and end is not None:
        query = query.where(between(P.c.approved_at, start, end))
    return materialised(only(query, P.c.service, services))
