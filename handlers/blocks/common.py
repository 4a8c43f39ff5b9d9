"""Block Kit pieces every message shares: action ids, icons, Slack's limits, times, gates and history lines.

Everything user-supplied passes through ``esc`` (mrkdwn) or goes into a
``plain_text`` object, so that a reason such as ``<!channel>`` or ``*bold*``
is shown, not executed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import Block, MarkdownTextObject, PlainTextObject, SectionBlock

from bot.clock import format_duration, format_when
from bot.engine.roles import PromotionView
from bot.text import approver_mention, clip, esc, evidence_text, link, literal, mention
from checks.base import GateReport, GateResult, GateStatus
from checks.deployment_window import WindowState
from checks.soak_time import SoakProgress
from storage.records import DeploymentRecord, VerificationRecord
from storage.statuses import DeploymentStatus, VerificationResult
from storage.statuses import PromotionStatus as S

APPROVE = "promotion.approve"
REJECT = "promotion.reject"
CANCEL = "promotion.cancel"
REVOKE = "promotion.revoke"
REJECT_VIEW = "promotion.reject_reason"
STATUS_ICON = {
    S.PENDING_APPROVAL: ":hourglass_flowing_sand:",
    S.APPROVED: ":white_check_mark:",
    S.DISPATCHED: ":rocket:",
    S.DEPLOYED: ":package:",
    S.VERIFIED: ":large_green_circle:",
    S.FAILED: ":red_circle:",
    S.REJECTED: ":no_entry:",
    S.EXPIRED: ":alarm_clock:",
    S.CANCELLED: ":heavy_multiplication_x:",
    S.SUPERSEDED: ":fast_forward:",
    S.VOIDED: ":warning:",
}
GATE_ICON = {
    GateStatus.PASSED: ":white_check_mark:",
    GateStatus.FAILED: ":x:",
    GateStatus.ERRORED: ":warning:",
    GateStatus.OFF: ":white_circle:",  # off by configuration: shown, never silently absent
    GateStatus.SKIPPED: ":fast_forward:",  # skipped for an expedited promotion
}
SECTION_LIMIT = 2900  # Slack refuses section text over 3000 characters
MESSAGE_BLOCKS = 50  # Slack's limit for a message
HOME_BLOCKS = 100  # Slack's limit for a Home tab
ENDED_WITH_REASON = (S.REJECTED, S.VOIDED, S.FAILED, S.SUPERSEDED, S.CANCELLED, S.EXPIRED)


def ago(then: datetime, now: datetime | None) -> str:
    """``3 h ago`` relative to ``now``; the absolute time when there is no ``now``."""
    if now is None:
        return format_when(then)
    minutes = int((now - then).total_seconds() // 60)
    if minutes < 0:
        return f"in {format_duration(then - now)}"
    if minutes < 60:
        return f"{minutes} min ago"
    if minutes < 48 * 60:
        return f"{minutes // 60} h ago"
    return f"{minutes // 1440} days ago"


def short_digest(digest: str | None) -> str:
    if not digest:
        return "—"
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def short_tag(tag: str, limit: int = 12) -> str:
    return tag if len(tag) <= limit else tag[: limit - 1] + "…"


def md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=clip(text, SECTION_LIMIT))


def plain(text: str) -> PlainTextObject:
    """User text shown as typed: plain_text is never parsed for formatting or mentions."""
    return PlainTextObject(text=clip(esc(text), SECTION_LIMIT), emoji=False)


def section(text: str) -> SectionBlock:
    return SectionBlock(text=md(text))


def chunks(lines: Sequence[str], limit: int = SECTION_LIMIT) -> list[str]:
    """Group lines into section-sized texts."""
    out: list[str] = []
    current = ""
    for line in lines:
        line = clip(line, 1000)
        if current and len(current) + len(line) + 1 > limit:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return out


def gate_line(result: GateResult) -> str:
    line = f"{GATE_ICON[result.status]} *{esc(result.title)}*: {evidence_text(result.reason, result.evidence)}"
    if result.blocks and result.next_step:
        line += f"\n      _{evidence_text(result.next_step, result.evidence)}_"
    return line


def gate_lines(report: GateReport | None, *, only_blocking: bool = False) -> list[str]:
    if report is None:
        return []
    results = report.blocking if only_blocking else report.results
    return [gate_line(r) for r in results]


def deployment_line(d: DeploymentRecord, now: datetime | None, *, with_tag: bool = False) -> str:
    icon = ":white_check_mark:" if d.status == DeploymentStatus.SUCCESS else ":x:"
    tag = f"`{esc(short_tag(d.tag))}` " if with_tag else ""
    return f"{icon} {tag}deployment {esc(d.status)} {ago(d.finished_at, now)}{run_link(d)}"


def run_link(d: DeploymentRecord) -> str:
    if not (d.url or d.run_id):
        return ""
    return " · " + link(d.url, f"run {esc(d.run_id)}" if d.run_id else "run")


def verification_line(v: VerificationRecord, now: datetime | None, *, with_tag: bool = False) -> str:
    icon = ":white_check_mark:" if v.result == VerificationResult.PASSED else ":x:"
    tag = f"`{esc(short_tag(v.tag))}` " if with_tag else ""
    checks = ", ".join(f"{esc(k)} {esc(val)}" for k, val in list((v.checks or {}).items())[:6])
    report = f" · {link(v.url, 'report')}" if v.url else ""
    return (
        f"{icon} {tag}verification {esc(v.result)} {ago(v.finished_at, now)}"
        + (f" ({checks})" if checks else "")
        + report
    )


def timeline(
    deployments: Sequence[DeploymentRecord],
    verifications: Sequence[VerificationRecord],
    now: datetime | None,
    *,
    with_tag: bool,
    limit: int = 5,
) -> list[str]:
    events = [(d.finished_at, deployment_line(d, now, with_tag=with_tag)) for d in deployments]
    events += [(v.finished_at, verification_line(v, now, with_tag=with_tag)) for v in verifications]
    return [line for _, line in sorted(events, key=lambda e: e[0], reverse=True)[:limit]]


def soak_note(soak: SoakProgress | None) -> str:
    """When the pipeline reported an earlier finish than promobot recorded: both, and which one counts."""
    if soak is None or not soak.reported_earlier or soak.since is None or soak.reported_at is None:
        return ""
    return (
        f" (counted from {format_when(soak.since)}, when promobot recorded the verification; "
        f"the pipeline reported {format_when(soak.reported_at)})"
    )


def window_text(w: WindowState) -> str:
    if w.freeze_reason:
        opens = f"; opens {format_when(w.next_opening)}" if w.next_opening else ""
        return f":snowflake: frozen until {esc(w.freeze_end)}: {literal(w.freeze_reason)}{opens}"
    if not w.windows:
        return "no window: any time"
    spans = ", ".join(esc(x) for x in w.windows) + f" {esc(w.timezone)}"
    if w.open_now:
        return f"open now ({spans})"
    return f"closed ({spans}); opens {format_when(w.next_opening)}" if w.next_opening else f"closed ({spans})"


def approvals_text(view: PromotionView, sep: str = "\n") -> str:
    approved = view.approved_by
    text = f"{len(approved)} of {view.required_approvals}"
    if approved:
        text += ": " + ", ".join(mention(a) for a in approved)
    if S(view.status) is S.PENDING_APPROVAL and len(approved) < view.required_approvals:
        who = ", ".join(approver_mention(a) for a in view.approvers)
        text += f"{sep}waiting for {view.required_approvals - len(approved)} more from {who}"
    return text


def message(text: str) -> list[Block]:
    return [section(text)]
