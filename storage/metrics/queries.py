"""Promotion metrics and the DORA four, computed in SQL.

Every number is an aggregate computed by the database (GROUP BY and window
functions that SQLite and PostgreSQL share); Python reads only the aggregated
rows. Percentiles are nearest-rank (the value at rank ceil(p * n)), which
ROW_NUMBER computes identically on both databases.

Definitions, per service and target environment over a window [start, end):

- promotion frequency: promotions (kind ``promotion``) verified per week,
  counted over the window or the 7 days before ``end``, whichever is longer,
  so a quiet day does not read as a missed weekly target;
- success rate: of the promotions that ended (verified or failed) in the
  window, those not failed and not followed by a rollback, where "followed"
  means the next promotion that went ahead in the same service and
  environment is a rollback requested before ``end``;
- expedited: of those that ended, how many were expedited (the model's
  exception for critical security patches), counted apart so that they stay
  visible;
- time to promote: the artifact's first passed verification in the previous
  environment to its successful deployment in this one (deployments in the
  window);
- approval duration: requested → approved, for promotions that needed a
  human (approved in the window);
- DORA, for the production environment: deployment frequency (successful
  deployments per week, same window rule as promotion frequency); lead time
  (artifact build time, the closest recorded proxy for the commit, →
  production deployment; rollbacks excluded); change failure rate (promotions
  that reached a deploy and then failed or were rolled back); time to restore
  (first failed deployment or verification of an incident → next passed
  verification; incidents start in the window).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import sqlalchemy as sa
from sqlmodel import Session

from storage.metrics.report import (
    ALL,
    DayPoint,
    DoraMetrics,
    Durations,
    MetricsReport,
    PromotionMetrics,
)
from storage.metrics.sql import (
    WEEK,
    A,
    D,
    P,
    Seconds,
    V,
    approval_rows,
    between,
    count_if,
    frequency_start,
    local_day,
    materialised,
    only,
    time_to_promote_rows,
)
from storage.models import UTCDateTime
from storage.statuses import WENT_AHEAD, DeploymentStatus, PromotionKind, VerificationResult


def _keys(table: sa.FromClause, per_service: bool) -> list[sa.ColumnElement]:
    return [table.c.service, table.c.environment] if per_service else [table.c.environment]


def _key(row: sa.Row, per_service: bool) -> tuple[str, str]:
    return (row.service if per_service else ALL, row.environment)


def _distribution(session: Session, rows: sa.CTE, per_service: bool) -> dict[tuple[str, str], Durations]:
    """Count, mean, median and p90 of ``rows.seconds`` per key, ranked inside the database."""
    part = _keys(rows, per_service)
    ranked = (
        sa.select(
            *part,
            rows.c.seconds,
            sa.func.row_number().over(partition_by=part, order_by=rows.c.seconds).label("rn"),
            sa.func.count().over(partition_by=part).label("n"),
        )
        .where(rows.c.seconds.is_not(None))
        .subquery()
    )
    keys = _keys(ranked, per_service)

    def at_rank(pct: int) -> sa.ColumnElement:  # nearest rank: ceil(pct/100 * n)
        return sa.func.max(sa.case((ranked.c.rn == (ranked.c.n * pct + 99) // 100, ranked.c.seconds)))

    query = sa.select(
        *keys,
        sa.func.count().label("n"),
        sa.func.avg(ranked.c.seconds).label("mean"),
        at_rank(50).label("median"),
        at_rank(90).label("p90"),
    ).group_by(*keys)
    return {
        _key(r, per_service): Durations(r.n, _td(r.mean), _td(r.median), _td(r.p90)) for r in session.execute(query)
    }


def _utc(when: datetime) -> datetime:
    return when.astimezone(UTC)


def _td(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=round(float(seconds), 3))


class _Outcomes(NamedTuple):
    completed: int = 0
    outcomes: int = 0
    rolled_back: int = 0
    changes: int = 0
    failed_changes: int = 0
    expedited: int = 0


def _outcomes(
    session: Session, start: datetime, end: datetime, services: Sequence[str] | None, per_service: bool
) -> dict[tuple[str, str], _Outcomes]:
    since = frequency_start(start, end)

    def went_ahead(*where: sa.ColumnElement) -> sa.Select:
        return only(
            sa.select(
                P.c.id,
                P.c.service,
                P.c.target_environment.label("environment"),
                P.c.kind,
                P.c.status,
                P.c.requested_at,
                P.c.completed_at,
                P.c.dispatched_at,
                P.c.expedited,
            ).where(P.c.status.in_(sorted(s.value for s in WENT_AHEAD)), P.c.requested_at < end, *where),
            P.c.service,
            services,
        )

    # promotions ending in the window and every change requested after them; a UNION of two index
    # ranges, because an OR of the two columns makes SQLite scan the whole table
    rows = sa.union(went_ahead(P.c.requested_at >= since), went_ahead(P.c.completed_at >= since)).subquery()
    order, part = [rows.c.requested_at, rows.c.id], [rows.c.service, rows.c.environment]
    chain = sa.select(
        rows.c.service,
        rows.c.environment,
        rows.c.kind,
        rows.c.status,
        rows.c.completed_at,
        rows.c.dispatched_at,
        rows.c.expedited,
        sa.func.lead(rows.c.kind).over(partition_by=part, order_by=order).label("next_kind"),
        sa.func.lead(rows.c.requested_at, type_=UTCDateTime()).over(partition_by=part, order_by=order).label("next_at"),
    ).subquery()
    c = chain.c
    promotion = c.kind == "promotion"
    ended = promotion & c.status.in_(("verified", "failed")) & between(c.completed_at, start, end)
    rolled = ended & ((c.status == "failed") | ((c.next_kind == "rollback") & (c.next_at < end)))
    deployed = c.dispatched_at.is_not(None)
    query = sa.select(
        *_keys(chain, per_service),
        count_if(promotion & (c.status == "verified") & between(c.completed_at, since, end)).label("completed"),
        count_if(ended).label("outcomes"),
        count_if(rolled).label("rolled_back"),
        count_if(ended & deployed).label("changes"),
        count_if(rolled & deployed).label("failed_changes"),
        count_if(ended & c.expedited.is_(sa.true())).label("expedited"),
    ).group_by(*_keys(chain, per_service))
    return {_key(r, per_service): _Outcomes(*r[-6:]) for r in session.execute(query)}


def _deployments(
    session: Session, start: datetime, end: datetime, services: Sequence[str] | None, production: str, per_service: bool
) -> dict[tuple[str, str], int]:
    query = only(
        sa.select(*_keys(D, per_service), sa.func.count().label("n"))
        .where(
            D.c.environment == production,
            D.c.status == DeploymentStatus.SUCCESS,
            between(D.c.finished_at, frequency_start(start, end), end),
        )
        .group_by(*_keys(D, per_service)),
        D.c.service,
        services,
    )
    return {_key(r, per_service): r.n for r in session.execute(query)}


def _lead_times(start: datetime, end: datetime, services: Sequence[str] | None, production: str) -> sa.CTE:
    query = (
        sa.select(D.c.service, D.c.environment, Seconds(A.c.built_at, D.c.finished_at).label("seconds"))
        .select_from(
            D.join(A, (A.c.service == D.c.service) & (A.c.tag == D.c.tag)).outerjoin(P, P.c.id == D.c.promotion_id)
        )
        .where(
            D.c.environment == production,
            D.c.status == DeploymentStatus.SUCCESS,
            between(D.c.finished_at, start, end),
            A.c.built_at.is_not(None),
            sa.or_(P.c.kind.is_(None), P.c.kind != PromotionKind.ROLLBACK),
        )
    )
    return materialised(only(query, D.c.service, services))


def _incidents(start: datetime, end: datetime, services: Sequence[str] | None, production: str) -> sa.CTE:
    """(service, environment, seconds to restore or NULL) per incident that started in the window."""
    failures = only(
        sa.select(D.c.service, D.c.environment, D.c.finished_at.label("at"), sa.literal(1).label("bad")).where(
            D.c.environment == production, D.c.status != DeploymentStatus.SUCCESS, between(D.c.finished_at, start, end)
        ),
        D.c.service,
        services,
    )
    checks = only(
        sa.select(
            V.c.service,
            V.c.environment,
            V.c.finished_at.label("at"),
            sa.case((V.c.result == VerificationResult.PASSED, 0), else_=1).label("bad"),
        ).where(V.c.environment == production, between(V.c.finished_at, start, end)),
        V.c.service,
        services,
    )
    signals = sa.union_all(failures, checks).subquery()
    marked = sa.select(
        signals,
        sa.func.lag(signals.c.bad)
        .over(partition_by=[signals.c.service, signals.c.environment], order_by=signals.c.at)
        .label("prev_bad"),
    ).subquery()
    # an incident starts at a failure that follows a pass (or nothing)
    starts = (
        sa.select(marked.c.service, marked.c.environment, marked.c.at)
        .where(marked.c.bad == 1, sa.or_(marked.c.prev_bad.is_(None), marked.c.prev_bad == 0))
        .subquery()
    )
    restored = (
        sa.select(sa.func.min(V.c.finished_at))
        .where(
            V.c.service == starts.c.service,
            V.c.environment == starts.c.environment,
            V.c.result == VerificationResult.PASSED,
            V.c.finished_at > starts.c.at,
        )
        .scalar_subquery()
    )
    return materialised(
        sa.select(starts.c.service, starts.c.environment, Seconds(starts.c.at, restored).label("seconds"))
    )


def compute(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    services: Sequence[str] | None = None,
    production: str = "production",
    per_service: bool = True,
) -> MetricsReport:
    """Promotion metrics per (service, environment) and DORA metrics for ``production`` over
    [start, end); with ``per_service=False``, totals per environment under service ``ALL``.
    ``services`` limits the services (None or empty: all)."""
    weeks = (end - frequency_start(start, end)) / WEEK
    outcomes = _outcomes(session, start, end, services, per_service)
    ttp = _distribution(session, time_to_promote_rows(start, end, services), per_service)
    approvals = _distribution(session, approval_rows(start, end, services), per_service)
    promotions = []
    for k in sorted(set(outcomes) | set(ttp) | set(approvals)):
        o = outcomes.get(k, _Outcomes())
        promotions.append(
            PromotionMetrics(
                service=k[0],
                environment=k[1],
                weeks=weeks,
                completed=o.completed,
                outcomes=o.outcomes,
                rolled_back=o.rolled_back,
                expedited=o.expedited,
                time_to_promote=ttp.get(k, Durations()),
                approval=approvals.get(k, Durations()),
            )
        )
    deployments = _deployments(session, start, end, services, production, per_service)
    lead = _distribution(session, _lead_times(start, end, services, production), per_service)
    incidents = _incidents(start, end, services, production)
    restore = _distribution(session, incidents, per_service)
    started = {
        _key(r, per_service): r.n
        for r in session.execute(
            sa.select(*_keys(incidents, per_service), sa.func.count().label("n")).group_by(
                *_keys(incidents, per_service)
            )
        )
    }
    changes = {k for k, o in outcomes.items() if k[1] == production and o.changes}
    dora = []
    for k in sorted(set(deployments) | changes | set(lead) | set(started)):
        o = outcomes.get(k, _Outcomes())
        dora.append(
            DoraMetrics(
                service=k[0],
                environment=k[1],
                weeks=weeks,
                deployments=deployments.get(k, 0),
                changes=o.changes,
                failed_changes=o.failed_changes,
                incidents=started.get(k, 0),
                lead_time=lead.get(k, Durations()),
                time_to_restore=restore.get(k, Durations()),
            )
        )
    return MetricsReport(start=start, end=end, promotions=promotions, dora=dora)


def daily_series(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    services: Sequence[str] | None = None,
    production: str = "production",
    utc_offset: timedelta = timedelta(0),
) -> list[DayPoint]:
    """One point per local day (UTC shifted by ``utc_offset``) from ``start`` to ``end``, gaps filled."""
    day = local_day(P.c.completed_at, utc_offset).label("day")
    done = only(
        sa.select(day, sa.func.count().label("n"))
        .where(P.c.kind == "promotion", P.c.status == "verified", between(P.c.completed_at, start, end))
        .group_by(day),
        P.c.service,
        services,
    )
    counts = {r.day: r.n for r in session.execute(done)}
    ttp = time_to_promote_rows(start, end, services)
    deployed_day = local_day(ttp.c.deployed_at, utc_offset).label("day")
    means = {
        r.day: r.mean
        for r in session.execute(
            sa.select(deployed_day, sa.func.avg(ttp.c.seconds).label("mean"))
            .where(ttp.c.environment == production)
            .group_by(deployed_day)
        )
    }
    first, last = (_utc(start) + utc_offset).date(), (_utc(end) - timedelta(microseconds=1) + utc_offset).date()
    return [
        DayPoint(d, counts.get(d.isoformat(), 0), _td(means.get(d.isoformat())))
        for d in (first + timedelta(days=i) for i in range((last - first).days + 1))
    ]
