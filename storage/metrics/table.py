"""Promotion metrics as plain-text tables for a terminal (``promobot metrics``)."""

from __future__ import annotations

from storage.metrics.report import ALL, DoraMetrics, MetricsReport, percent


def format_table(report: MetricsReport) -> str:
    """Promotion metrics with their targets, then DORA."""
    head = [
        "service",
        "environment",
        "promotions/week",
        "success rate",
        "time to promote",
        "approval duration",
        "expedited",
    ]
    rows = [
        [_name(m.service), m.environment]
        + [f"{t.value} {_flag(t.met)}".strip() for t in m.targets()]
        + [f"{m.expedited} of {m.outcomes}" if m.outcomes else "–"]
        for m in report.promotions
    ]
    dora_head = ["service", "environment", "deploys/week", "lead time", "change failure rate", "time to restore"]
    dora = [
        [
            _name(d.service),
            d.environment,
            f"{d.per_week:.1f}",
            str(d.lead_time),
            percent(d.change_failure_rate),
            _restore(d),
        ]
        for d in report.dora
    ]
    return "\n".join(
        [
            f"Promotion metrics {report.start:%Y-%m-%d %H:%M} – {report.end:%Y-%m-%d %H:%M} UTC "
            "(targets: weekly or more, > 95%, < 1 day, < 1 hour; medians)",
            _table(head, rows),
            "",
            "DORA (production)",
            _table(dora_head, dora),
        ]
    )


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
