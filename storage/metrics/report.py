"""The metrics' results as plain values, with the promotion model's targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from bot.clock import format_short

ALL = "*"  # the service name of totals across services

FREQUENCY_TARGET = 1.0  # per week
SUCCESS_TARGET = 0.95  # strictly above
TIME_TO_PROMOTE_TARGET = timedelta(days=1)  # median strictly below
APPROVAL_TARGET = timedelta(hours=1)  # median strictly below


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


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
        return f"{format_short(self.median)} (p90 {format_short(self.p90)}, n={self.count})"


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
    expedited: int = 0  # of those, expedited (critical security patches), counted apart
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
            TargetCheck(
                "promotion frequency", "weekly or more", f"{self.per_week:.1f}/week", self.per_week >= FREQUENCY_TARGET
            ),
            TargetCheck("success rate", "> 95%", percent(rate), None if rate is None else rate > SUCCESS_TARGET),
            TargetCheck(
                "time to promote", "< 1 day", format_short(ttp), None if ttp is None else ttp < TIME_TO_PROMOTE_TARGET
            ),
            TargetCheck(
                "approval duration", "< 1 hour", format_short(appr), None if appr is None else appr < APPROVAL_TARGET
            ),
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
class Expedited:
    promotion_id: str
    service: str
    environment: str
    source_environment: str | None
    tag: str
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
