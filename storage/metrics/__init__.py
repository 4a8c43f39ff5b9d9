"""Promotion metrics and the DORA four, computed in SQL (``queries``), as plain values (``report``),
for a terminal (``table``) and for Prometheus (``prometheus``)."""

from storage.metrics.queries import compute, daily_series, failed_verifications, rollbacks, slowest_approvals
from storage.metrics.report import (
                                    ALL,
                                    APPROVAL_TARGET,
                                    FREQUENCY_TARGET,
                                    SUCCESS_TARGET,
                                    TIME_TO_PROMOTE_TARGET,
                                    DayPoint,
                                    DoraMetrics,
                                    Durations,
                                    FailedVerification,
                                    Listing,
                                    MetricsReport,
                                    PromotionMetrics,
                                    Rollback,
                                    SlowApproval,
                                    TargetCheck,
                                    percent,
)

__all__ = ["ALL", "APPROVAL_TARGET", "FREQUENCY_TARGET", "SUCCESS_TARGET", "TIME_TO_PROMOTE_TARGET", "DayPoint",
           "DoraMetrics", "Durations", "FailedVerification", "Listing", "MetricsReport", "PromotionMetrics",
           "Rollback", "SlowApproval", "TargetCheck", "compute", "daily_series", "failed_verifications", "percent",
           "rollbacks", "slowest_approvals"]
