"""Answers to a command: a refusal with every gate that refused, and the full report of ``--check``."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, ContextBlock

from bot.text import clip, esc, evidence_text
from checks.base import GateReport, GateStatus
from handlers.blocks.common import chunks, gate_lines, md, section
from storage.statuses import PromotionKind


def refusal(report: GateReport, *, kind: str = PromotionKind.PROMOTION) -> list[Block]:
    verb = "roll back" if kind == PromotionKind.ROLLBACK else "promote"
    head = (
        f":no_entry: Cannot {verb} *{esc(report.service)}* `{esc(report.tag)}` to "
        f"*{esc(report.target_environment)}*: {len(report.blocking)} of {len(report.results)} gates refused."
    )
    blocks: list[Block] = [section(head)]
    blocks += [section(chunk) for chunk in chunks(gate_lines(report, only_blocking=True))]
    passed = [r.title for r in report.with_status(GateStatus.PASSED)]
    notes = [f"Passed: {', '.join(passed)}"] if passed else []
    off = [r.title for r in report.with_status(GateStatus.OFF)]
    if off:
        notes.append(f"Off by configuration: {', '.join(off)}")
    skipped = [r.title for r in report.with_status(GateStatus.SKIPPED)]
    if skipped:
        notes.append(f"Skipped for expedite: {', '.join(skipped)}")
    if notes:
        blocks.append(ContextBlock(elements=[md(clip(esc(" · ".join(notes)), 1900))]))
    return blocks


def refusal_text(report: GateReport, *, kind: str = PromotionKind.PROMOTION) -> str:
    verb = "roll back" if kind == PromotionKind.ROLLBACK else "promote"
    reasons = "; ".join(f"{esc(r.title)}: {evidence_text(r.reason, r.evidence)}" for r in report.blocking)
    return f"Cannot {verb} {esc(report.service)} {esc(report.tag)} to {esc(report.target_environment)}: {reasons}"


def eligibility(report: GateReport) -> list[Block]:
    """The full report for --check: every gate, nothing requested."""
    icon = ":white_check_mark:" if report.eligible else ":no_entry:"
    verdict = "eligible" if report.eligible else "not eligible"
    expedited = (
        f" as an *EXPEDITED* promotion from {esc(report.source_environment or '—')}: {esc(report.expedite.reason)}"
        if report.expedite
        else ""
    )
    head = (
        f"{icon} *{esc(report.service)}* `{esc(report.tag)}` → *{esc(report.target_environment)}* is "
        f"{verdict}{expedited} (check only; nothing was requested)."
    )
    return [section(head), *(section(chunk) for chunk in chunks(gate_lines(report)))]
