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

import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Iterator, NamedTuple, Sequence

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Session

from storage.models import Artifact, Deployment, Promotion, UTCDateTime, Verification

P, D, V, A = Promotion.__table__, Deployment.__table__, Verification.__table__, Artifact.__table__
ALL = "*"  # the service name of totals across services
WEEK = timedelta(days=7)
# states in which a promotion changed (or is changing) what the environment runs
WENT_AHEAD = ("approved", "dispatched", "deployed", "verified", "failed")

FREQUENCY_TARGET = 1.0  # per week
SUCCESS_TARGET = 0.95  # strictly above
TIME_TO_PROMOTE_TARGET = timedelta(days=1)  # median strictly below
APPROVAL_TARGET = timedelta(hours=1)  # median strictly below


# --- portable SQL pieces ---------------------------------------------------------


class _Seconds(FunctionElement):
    """Seconds from the first timestamp to the second."""

    type = sa.Float()
    inherit_cache = True


@compiles(_Seconds, "sqlite")
def _seconds_sqlite(element, compiler, **kw):  # noqa: ANN001
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    # julianday is exact to the millisecond; rounding drops the float noise of the subtraction
    return f"round((julianday({end}) - julianday({start})) * 86400.0, 3)"


@compiles(_Seconds, "postgresql")
def _seconds_postgresql(element, compiler, **kw):  # noqa: ANN001
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS DOUBLE PRECISION)"


class _LocalDay(FunctionElement):
    """'YYYY-MM-DD' of a UTC timestamp shifted by a whole number of seconds (a time zone's offset)."""

    type = sa.String()
    inherit_cache = True


@compiles(_LocalDay, "sqlite")
def _day_sqlite(element, compiler, **kw):  # noqa: ANN001
    ts, offset = (compiler.process(c, **kw) for c in element.clauses)
    return f"date({ts}, ({offset}) || ' seconds')"


@compiles(_LocalDay, "postgresql")
def _day_postgresql(element, compiler, **kw):  # noqa: ANN001
    ts, offset = (compiler.process(c, **kw) for c in element.clauses)
    return f"to_char(({ts} AT TIME ZONE 'UTC') + ({offset}) * INTERVAL '1 second', 'YYYY-MM-DD')"


def _local_day(ts: sa.ColumnElement, utc_offset: timedelta) -> _LocalDay:
    return _LocalDay(ts, sa.literal_column(str(int(utc_offset.total_seconds()))))


def _count_if(condition: sa.ColumnElement) -> sa.ColumnElement:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def _between(column: sa.ColumnElement, start: datetime, end: datetime) -> sa.ColumnElement:
    return (column >= start) & (column < end)


def _only(query: sa.Select, column: sa.ColumnElement, services: Sequence[str] | None) -> sa.Select:
    return query.where(column.in_(list(services))) if services else query


def frequency_start(start: datetime, end: datetime) -> datetime:
    """Where the per-week rates start counting: the window, or the week before ``end`` if longer."""
    return min(start, end - WEEK)


# --- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class Durations:
    """A distribution of durations: how many, mean, nearest-rank median and 90th percentile."""

    count: int = 0
    mean: timedelta | None = None
    median: timedelta | None = None
    p90: timedelta | None = None

    def __str__(self) -> str:
        if not self.count:
            return "–"
        return f"{human(self.median)} (p90 {human(self.p90)}, n={self.count})"


@dataclass(frozen=True)
class TargetCheck:
    metric: str
    goal: str
    value: str
    met: bool | None  # None: nothing to judge in the window

    @property
    def mark(self) -> str:
        return {True: "met", False: "MISSED", None: "no data"}[self.met]


@dataclass(frozen=True)
class PromotionMetrics:
    service: str  # ALL for totals across services
    environment: str
    weeks: float  # length of the frequency window, in weeks
    completed: int  # promotions verified in the frequency window
    outcomes: int  # promotions that ended (verified or failed) in the window
    rolled_back: int  # of those, failed or followed by a rollback
    time_to_promote: Durations = field(default_factory=Durations)
    approval: Durations = field(default_factory=Durations)

    @property
    def per_week(self) -> float:
        return self.completed / self.weeks

    @property
    def success_rate(self) -> float | None:
        return (self.outcomes - self.rolled_back) / self.outcomes if self.outcomes else None

    def targets(self) -> list[TargetCheck]:
        """Each metric against the promotion model's target."""
        rate, ttp, appr = self.success_rate, self.time_to_promote.median, self.approval.median
        return [
            TargetCheck("promotion frequency", "weekly or more", f"{self.per_week:.1f}/week",
                         self.per_week >= FREQUENCY_TARGET),
            TargetCheck("success rate", "> 95%", percent(rate), None if rate is None else rate > SUCCESS_TARGET),
            TargetCheck("time to promote", "< 1 day", human(ttp),
                        None if ttp is None else ttp < TIME_TO_PROMOTE_TARGET),
            TargetCheck("approval duration", "< 1 hour", human(appr),
                        None if appr is None else appr < APPROVAL_TARGET),
        ]


@dataclass(frozen=True)
class DoraMetrics:
    service: str
    environment: str
    weeks: float
    deployments: int  # successful deployments in the frequency window
    changes: int  # promotions that reached a deploy and ended in the window
    failed_changes: int
    incidents: int  # failures that started an incident in the window
    lead_time: Durations = field(default_factory=Durations)
    time_to_restore: Durations = field(default_factory=Durations)  # restored incidents only

    @property
    def per_week(self) -> float:
        return self.deployments / self.weeks

    @property
    def change_failure_rate(self) -> float | None:
        return self.failed_changes / self.changes if self.changes else None

    @property
    def open_incidents(self) -> int:
        return self.incidents - self.time_to_restore.count


@dataclass(frozen=True)
class MetricsReport:
    start: datetime
    end: datetime
    promotions: list[PromotionMetrics]
    dora: list[DoraMetrics]

    def format_table(self) -> str:
        """Plain-text tables for a terminal: promotion metrics with their targets, then DORA."""
        head = ["service", "environment", "promotions/week", "success rate", "time to promote",
                "approval duration"]
        rows = [[_name(m.service), m.environment] + [f"{t.value} {_flag(t.met)}".strip() for t in m.targets()]
                for m in self.promotions]
        dora_head = ["service", "environment", "deploys/week", "lead time", "change failure rate",
                     "time to restore"]
        dora = [[_name(d.service), d.environment, f"{d.per_week:.1f}", str(d.lead_time), percent(d.change_failure_rate),
                 _restore(d)] for d in self.dora]
        return "\n".join([f"Promotion metrics {self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M} UTC "
                          "(targets: weekly or more, > 95%, < 1 day, < 1 hour; medians)",
                          _table(head, rows), "", "DORA (production)", _table(dora_head, dora)])


def _name(service: str) -> str:
    return "all services" if service == ALL else service


def _restore(d: DoraMetrics) -> str:
    opened = f"{d.open_incidents} open" if d.open_incidents else ""
    if not d.time_to_restore.count:
        return opened or "–"
    return f"{d.time_to_restore}, {opened}" if opened else str(d.time_to_restore)


def _flag(met: bool | None) -> str:
    return {True: "✓", False: "✗ missed", None: ""}[met]


def _table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "(no activity)"
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


def human(td: timedelta | None) -> str:
    """A duration in one short unit: 45s, 12m, 3.5h, 2.1d."""
    if td is None:
        return "–"
    s = td.total_seconds()
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


# --- the queries -----------------------------------------------------------------------


def _rows(query: sa.Select) -> sa.CTE:
    """Per-row durations as a materialised CTE: computed once, however often the aggregate reads them
    (inlined, each reference would rerun the per-row correlated subquery)."""
    return query.cte().prefix_with("MATERIALIZED")


def _keys(table: sa.FromClause, per_service: bool) -> list[sa.ColumnElement]:
    return [table.c.service, table.c.environment] if per_service else [table.c.environment]


def _key(row: sa.Row, per_service: bool) -> tuple[str, str]:
    return (row.service if per_service else ALL, row.environment)


def _distribution(session: Session, rows: sa.CTE, per_service: bool) -> dict[tuple[str, str], Durations]:
    """Count, mean, median and p90 of ``rows.seconds`` per key, ranked inside the database."""
    part = _keys(rows, per_service)
    ranked = (sa.select(*part, rows.c.seconds,
                        sa.func.row_number().over(partition_by=part, order_by=rows.c.seconds).label("rn"),
                        sa.func.count().over(partition_by=part).label("n"))
              .where(rows.c.seconds.is_not(None)).subquery())
    keys = _keys(ranked, per_service)

    def at_rank(pct: int) -> sa.ColumnElement:  # nearest rank: ceil(pct/100 * n)
        return sa.func.max(sa.case((ranked.c.rn == (ranked.c.n * pct + 99) // 100, ranked.c.seconds)))

    query = sa.select(*keys, sa.func.count().label("n"), sa.func.avg(ranked.c.seconds).label("mean"),
                      at_rank(50).label("median"), at_rank(90).label("p90")).group_by(*keys)
    return {_key(r, per_service): Durations(r.n, _td(r.mean), _td(r.median), _td(r.p90))
            for r in session.execute(query)}


def _utc(when: datetime) -> datetime:
    return when.astimezone(timezone.utc)


def _td(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=round(float(seconds), 3))


class _Outcomes(NamedTuple):
    completed: int = 0
    outcomes: int = 0
    rolled_back: int = 0
    changes: int = 0
    failed_changes: int = 0


def _outcomes(session: Session, start: datetime, end: datetime, services: Sequence[str] | None,
              per_service: bool) -> dict[tuple[str, str], _Outcomes]:
    since = frequency_start(start, end)

    def went_ahead(*where: sa.ColumnElement) -> sa.Select:
        return _only(sa.select(P.c.id, P.c.service, P.c.target_environment.label("environment"), P.c.kind, P.c.status,
                               P.c.requested_at, P.c.completed_at, P.c.dispatched_at)
                     .where(P.c.status.in_(WENT_AHEAD), P.c.requested_at < end, *where), P.c.service, services)

    # promotions ending in the window and every change requested after them; a UNION of two index
    # ranges, because an OR of the two columns makes SQLite scan the whole table
    rows = sa.union(went_ahead(P.c.requested_at >= since), went_ahead(P.c.completed_at >= since)).subquery()
    order, part = [rows.c.requested_at, rows.c.id], [rows.c.service, rows.c.environment]
    chain = sa.select(
        rows.c.service, rows.c.environment, rows.c.kind, rows.c.status, rows.c.completed_at, rows.c.dispatched_at,
        sa.func.lead(rows.c.kind).over(partition_by=part, order_by=order).label("next_kind"),
        sa.func.lead(rows.c.requested_at, type_=UTCDateTime()).over(partition_by=part, order_by=order).label("next_at"),
    ).subquery()
    c = chain.c
    promotion = c.kind == "promotion"
    ended = promotion & c.status.in_(("verified", "failed")) & _between(c.completed_at, start, end)
    rolled = ended & ((c.status == "failed") | ((c.next_kind == "rollback") & (c.next_at < end)))
    deployed = c.dispatched_at.is_not(None)
    query = sa.select(
        *_keys(chain, per_service),
        _count_if(promotion & (c.status == "verified") & _between(c.completed_at, since, end)).label("completed"),
        _count_if(ended).label("outcomes"),
        _count_if(rolled).label("rolled_back"),
        _count_if(ended & deployed).label("changes"),
        _count_if(rolled & deployed).label("failed_changes"),
    ).group_by(*_keys(chain, per_service))
    return {_key(r, per_service): _Outcomes(*r[-5:]) for r in session.execute(query)}


def _time_to_promote(start: datetime | None, end: datetime | None, services: Sequence[str] | None) -> sa.CTE:
    """(service, environment, deployed_at, seconds) per promotion deployed in the window (all time without one)."""
    ready = (sa.select(sa.func.min(V.c.finished_at))
             .where(V.c.service == P.c.service, V.c.environment == P.c.source_environment, V.c.tag == P.c.tag,
                    V.c.result == "passed", V.c.finished_at <= D.c.finished_at)
             .scalar_subquery())
    query = (sa.select(P.c.service, P.c.target_environment.label("environment"), D.c.finished_at.label("deployed_at"),
                       _Seconds(ready, D.c.finished_at).label("seconds"))
             .select_from(D.join(P, P.c.id == D.c.promotion_id))
             .where(D.c.status == "success", P.c.kind == "promotion", P.c.source_environment.is_not(None)))
    if start is not None:
        query = query.where(_between(D.c.finished_at, start, end))
    return _rows(_only(query, D.c.service, services))


def _approvals(start: datetime | None, end: datetime | None,
               services: Sequence[str] | None) -> sa.CTE:
    query = (sa.select(P.c.service, P.c.target_environment.label("environment"),
                       _Seconds(P.c.requested_at, P.c.approved_at).label("seconds"))
             .where(P.c.required_approvals > 0, P.c.approved_at.is_not(None)))
    if start is not None:
        query = query.where(_between(P.c.approved_at, start, end))
    return _rows(_only(query, P.c.service, services))


def _deployments(session: Session, start: datetime, end: datetime, services: Sequence[str] | None,
                 production: str, per_service: bool) -> dict[tuple[str, str], int]:
    query = _only(sa.select(*_keys(D, per_service), sa.func.count().label("n"))
                  .where(D.c.environment == production, D.c.status == "success",
                         _between(D.c.finished_at, frequency_start(start, end), end))
                  .group_by(*_keys(D, per_service)), D.c.service, services)
    return {_key(r, per_service): r.n for r in session.execute(query)}


def _lead_times(start: datetime, end: datetime, services: Sequence[str] | None, production: str) -> sa.CTE:
    query = (sa.select(D.c.service, D.c.environment, _Seconds(A.c.built_at, D.c.finished_at).label("seconds"))
             .select_from(D.join(A, (A.c.service == D.c.service) & (A.c.tag == D.c.tag))
                          .outerjoin(P, P.c.id == D.c.promotion_id))
             .where(D.c.environment == production, D.c.status == "success", _between(D.c.finished_at, start, end),
                    A.c.built_at.is_not(None), sa.or_(P.c.kind.is_(None), P.c.kind != "rollback")))
    return _rows(_only(query, D.c.service, services))


def _incidents(start: datetime, end: datetime, services: Sequence[str] | None, production: str) -> sa.CTE:
    """(service, environment, seconds to restore or NULL) per incident that started in the window."""
    failures = _only(sa.select(D.c.service, D.c.environment, D.c.finished_at.label("at"), sa.literal(1).label("bad"))
                     .where(D.c.environment == production, D.c.status != "success",
                            _between(D.c.finished_at, start, end)), D.c.service, services)
    checks = _only(sa.select(V.c.service, V.c.environment, V.c.finished_at.label("at"),
                             sa.case((V.c.result == "passed", 0), else_=1).label("bad"))
                   .where(V.c.environment == production, _between(V.c.finished_at, start, end)),
                   V.c.service, services)
    signals = sa.union_all(failures, checks).subquery()
    marked = sa.select(signals, sa.func.lag(signals.c.bad).over(
        partition_by=[signals.c.service, signals.c.environment], order_by=signals.c.at).label("prev_bad")).subquery()
    # an incident starts at a failure that follows a pass (or nothing)
    starts = (sa.select(marked.c.service, marked.c.environment, marked.c.at)
              .where(marked.c.bad == 1, sa.or_(marked.c.prev_bad.is_(None), marked.c.prev_bad == 0)).subquery())
    restored = (sa.select(sa.func.min(V.c.finished_at))
                .where(V.c.service == starts.c.service, V.c.environment == starts.c.environment,
                       V.c.result == "passed", V.c.finished_at > starts.c.at).scalar_subquery())
    return _rows(sa.select(starts.c.service, starts.c.environment, _Seconds(starts.c.at, restored).label("seconds")))


def compute(session: Session, *, start: datetime, end: datetime, services: Sequence[str] | None = None,
            production: str = "production", per_service: bool = True) -> MetricsReport:
    """Promotion metrics per (service, environment) and DORA metrics for ``production`` over
    [start, end); with ``per_service=False``, totals per environment under service ``ALL``.
    ``services`` limits the services (None or empty: all)."""
    weeks = (end - frequency_start(start, end)) / WEEK
    outcomes = _outcomes(session, start, end, services, per_service)
    ttp = _distribution(session, _time_to_promote(start, end, services), per_service)
    approvals = _distribution(session, _approvals(start, end, services), per_service)
    promotions = []
    for k in sorted(set(outcomes) | set(ttp) | set(approvals)):
        o = outcomes.get(k, _Outcomes())
        promotions.append(PromotionMetrics(
            service=k[0], environment=k[1], weeks=weeks, completed=o.completed, outcomes=o.outcomes,
            rolled_back=o.rolled_back, time_to_promote=ttp.get(k, Durations()), approval=approvals.get(k, Durations())))
    deployments = _deployments(session, start, end, services, production, per_service)
    lead = _distribution(session, _lead_times(start, end, services, production), per_service)
    incidents = _incidents(start, end, services, production)
    restore = _distribution(session, incidents, per_service)
    started = {_key(r, per_service): r.n for r in session.execute(
        sa.select(*_keys(incidents, per_service), sa.func.count().label("n")).group_by(*_keys(incidents, per_service)))}
    changes = {k for k, o in outcomes.items() if k[1] == production and o.changes}
    dora = []
    for k in sorted(set(deployments) | changes | set(lead) | set(started)):
        o = outcomes.get(k, _Outcomes())
        dora.append(DoraMetrics(
            service=k[0], environment=k[1], weeks=weeks, deployments=deployments.get(k, 0), changes=o.changes,
            failed_changes=o.failed_changes, incidents=started.get(k, 0), lead_time=lead.get(k, Durations()),
            time_to_restore=restore.get(k, Durations())))
    return MetricsReport(start=start, end=end, promotions=promotions, dora=dora)


# --- what a digest lists ----------------------------------------------------------------


@dataclass(frozen=True)
class SlowApproval:
    promotion_id: str
    service: str
    environment: str
    tag: str
    requested_by: str
    duration: timedelta


@dataclass(frozen=True)
class FailedVerification:
    service: str
    environment: str
    tag: str
    finished_at: datetime
    url: str | None


@dataclass(frozen=True)
class Rollback:
    promotion_id: str
    service: str
    environment: str
    tag: str
    replaces_tag: str | None
    status: str
    requested_by: str
    reason: str | None


@dataclass(frozen=True)
class Listing:
    """The first ``items`` of ``total``."""

    total: int
    items: list


@dataclass(frozen=True)
class DayPoint:
    day: date
    promotions: int  # promotions verified that day, every environment
    time_to_promote: timedelta | None  # mean, into ``production``, of deployments that day


def slowest_approvals(session: Session, *, start: datetime, end: datetime, services: Sequence[str] | None = None,
                      limit: int = 5) -> list[SlowApproval]:
    """The longest request → approval waits among promotions approved in the window."""
    seconds = _Seconds(P.c.requested_at, P.c.approved_at)
    query = _only(sa.select(P.c.id, P.c.service, P.c.target_environment, P.c.tag, P.c.requested_by,
                            seconds.label("seconds"))
                  .where(P.c.required_approvals > 0, _between(P.c.approved_at, start, end))
                  .order_by(seconds.desc(), P.c.id).limit(limit), P.c.service, services)
    return [SlowApproval(r.id, r.service, r.target_environment, r.tag, r.requested_by, _td(r.seconds))
            for r in session.execute(query)]


def failed_verifications(session: Session, *, start: datetime, end: datetime,
                         services: Sequence[str] | None = None, limit: int = 10) -> Listing:
    """Verifications that failed in the window, most recent first."""
    where = [V.c.result != "passed", _between(V.c.finished_at, start, end)]
    total = session.execute(_only(sa.select(sa.func.count()).where(*where), V.c.service, services)).scalar_one()
    query = _only(sa.select(V.c.service, V.c.environment, V.c.tag, V.c.finished_at, V.c.url).where(*where)
                  .order_by(V.c.finished_at.desc(), V.c.id.desc()).limit(limit), V.c.service, services)
    return Listing(total, [FailedVerification(*r) for r in session.execute(query)])


def rollbacks(session: Session, *, start: datetime, end: datetime, services: Sequence[str] | None = None,
              limit: int = 10) -> Listing:
    """Rollbacks requested in the window, most recent first, whatever became of them."""
    where = [P.c.kind == "rollback", _between(P.c.requested_at, start, end)]
    total = session.execute(_only(sa.select(sa.func.count()).where(*where), P.c.service, services)).scalar_one()
    query = _only(sa.select(P.c.id, P.c.service, P.c.target_environment, P.c.tag, P.c.replaces_tag, P.c.status,
                            P.c.requested_by, P.c.reason).where(*where)
                  .order_by(P.c.requested_at.desc(), P.c.id).limit(limit), P.c.service, services)
    return Listing(total, [Rollback(*r) for r in session.execute(query)])


def daily_series(session: Session, *, start: datetime, end: datetime, services: Sequence[str] | None = None,
                 production: str = "production", utc_offset: timedelta = timedelta(0)) -> list[DayPoint]:
    """One point per local day (UTC shifted by ``utc_offset``) from ``start`` to ``end``, gaps filled."""
    day = _local_day(P.c.completed_at, utc_offset).label("day")
    done = _only(sa.select(day, sa.func.count().label("n"))
                 .where(P.c.kind == "promotion", P.c.status == "verified", _between(P.c.completed_at, start, end))
                 .group_by(day), P.c.service, services)
    counts = {r.day: r.n for r in session.execute(done)}
    ttp = _time_to_promote(start, end, services)
    deployed_day = _local_day(ttp.c.deployed_at, utc_offset).label("day")
    means = {r.day: r.mean for r in session.execute(
        sa.select(deployed_day, sa.func.avg(ttp.c.seconds).label("mean"))
        .where(ttp.c.environment == production).group_by(deployed_day))}
    first, last = (_utc(start) + utc_offset).date(), (_utc(end) - timedelta(microseconds=1) + utc_offset).date()
    return [DayPoint(d, counts.get(d.isoformat(), 0), _td(means.get(d.isoformat())))
            for d in (first + timedelta(days=i) for i in range((last - first).days + 1))]


# --- Prometheus ----------------------------------------------------------------------------

APPROVAL_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)
PROMOTE_BUCKETS = (900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400)
TERMINAL = ("verified", "failed", "rejected", "expired", "cancelled", "superseded", "voided")


class PromotionCollector:
    """Prometheus metrics aggregated by the database at scrape time.

    The all-time time-to-promote histogram reads every deployment (about a second per 100,000
    promotions), so a result is reused for ``max_age`` seconds instead of recomputed per scrape.
    """

    def __init__(self, engine: sa.Engine, max_age: float = 60.0):
        self.engine = engine
        self.max_age = max_age
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] >= self.max_age:
            self._cached = (now, self._query())
        return iter(self._cached[1])

    def _query(self) -> list[Metric]:
        labels = ["service", "environment", "kind", "status"]
        ended = CounterMetricFamily("promobot_promotions", "Promotions that ended, by final status.", labels=labels)
        open_ = GaugeMetricFamily("promobot_promotions_in_progress", "Promotions not yet ended, by status.",
                                  labels=labels)
        histograms = [
            (HistogramMetricFamily("promobot_approval_duration_seconds", "Request to approval.",
                                   labels=["service", "environment"]), _approvals(None, None, None), APPROVAL_BUCKETS),
            (HistogramMetricFamily("promobot_time_to_promote_seconds",
                                   "Previous-environment verification to deployment.",
                                   labels=["service", "environment"]), _time_to_promote(None, None, None),
             PROMOTE_BUCKETS),
        ]
        with Session(self.engine) as s:
            if s.get_bind().dialect.name == "postgresql":
                # JIT compilation costs more than these scans (0.8 s of 1.7 s measured)
                s.execute(sa.text("SET LOCAL jit = off"))
            by_status = sa.select(P.c.service, P.c.target_environment, P.c.kind, P.c.status, sa.func.count())
            for service, environment, kind, status, n in s.execute(by_status.group_by(
                    P.c.service, P.c.target_environment, P.c.kind, P.c.status)):
                (ended if status in TERMINAL else open_).add_metric([service, environment, kind, status], n)
            for family, rows, buckets in histograms:
                query = (sa.select(rows.c.service, rows.c.environment, sa.func.count().label("n"),
                                   sa.func.sum(rows.c.seconds).label("total"),
                                   *[_count_if(rows.c.seconds <= b) for b in buckets])
                         .where(rows.c.seconds.is_not(None)).group_by(rows.c.service, rows.c.environment))
                for service, environment, n, total, *cumulative in s.execute(query):
                    family.add_metric([service, environment], sum_value=float(total),
                                      buckets=[(str(float(b)), c) for b, c in zip(buckets, cumulative)]
                                      + [("+Inf", n)])
        return [ended, open_, *(family for family, _, _ in histograms)]


def build_registry(engine: sa.Engine, max_age: float = 60.0) -> CollectorRegistry:
    """A registry for GET /metrics: promotions by status and the approval-duration and time-to-promote
    histograms (all time, per service and environment), queried at most every ``max_age`` seconds."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PromotionCollector(engine, max_age))
    return registry
