"""One daily digest's numbers: the period's metrics, listings and chart series, in aggregate queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session

from bot.config import DigestConfig
from storage import audit
from storage.metrics import listings
from storage.metrics import queries as metrics
from storage.metrics.report import DayPoint, Listing, MetricsReport, SlowApproval

CHART_DAYS = 14


@dataclass(frozen=True)
class Digest:
    """One period's numbers for one digest: everything its message and chart show."""

    config: DigestConfig
    start: datetime
    end: datetime
    environments: list[str]  # most important first: production, then the ones before it
    totals: MetricsReport  # per environment, all selected services together
    per_service: MetricsReport
    slowest: list[SlowApproval]
    failed: Listing
    rollbacks: Listing
    expedited: Listing  # expedited promotions requested in the period, with their reasons
    series: list[DayPoint]  # the last CHART_DAYS local days
    audit_head: tuple[int, str]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.timezone)

    def local(self, when: datetime, fmt: str = "%a %d %b %H:%M") -> str:
        return when.astimezone(self.zone).strftime(fmt)


def compute_digest(session: Session, *, digest: DigestConfig, environments: list[str], end: datetime) -> Digest:
    """The numbers for the period ``digest.window`` before ``end``, in aggregate queries."""
    services = digest.services or None
    start = end - digest.window
    production = environments[-1]
    local_end = end.astimezone(ZoneInfo(digest.timezone))
    chart_start = local_end.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=CHART_DAYS - 1)
    offset = local_end.utcoffset() or timedelta(0)
    return Digest(
        config=digest,
        start=start,
        end=end,
        environments=environments[::-1],
        totals=metrics.compute(
            session, start=start, end=end, services=services, production=production, per_service=False
        ),
        per_service=metrics.compute(session, start=start, end=end, services=services, production=production),
        slowest=listings.slowest_approvals(session, start=start, end=end, services=services),
        failed=listings.failed_verifications(session, start=start, end=end, services=services, limit=5),
        rollbacks=listings.rollbacks(session, start=start, end=end, services=services, limit=5),
        expedited=listings.expedited_promotions(session, start=start, end=end, services=services, limit=5),
        series=metrics.daily_series(
            session, start=chart_start, end=end, services=services, production=production, utc_offset=offset
        ),
        audit_head=audit.head_summary(session),
    )
