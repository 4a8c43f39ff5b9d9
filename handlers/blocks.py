"""Block Kit rendering: pure functions from promotion state to typed blocks.

Everything user-supplied passes through ``esc`` so that a reason such as
``<!channel>`` is shown, not executed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from slack_sdk.models.blocks import (ActionsBlock, Block, ButtonElement, ConfirmObject, ContextBlock,
                                     DividerBlock, HeaderBlock, InputBlock, MarkdownTextObject,
                                     PlainTextInputElement, PlainTextObject, SectionBlock)
from slack_sdk.models.views import View

from bot.roles import PromotionView
from bot.text import esc
from bot.states import PromotionStatus as S
from checks.base import GateReport, GateResult, GateStatus

APPROVE = "promotion.approve"
REJECT = "promotion.reject"
CANCEL = "promotion.cancel"
REJECT_VIEW = "promotion.reject_reason"

STATUS_ICON = {
    S.PENDING_APPROVAL: ":hourglass_flowing_sand:", S.APPROVED: ":white_check_mark:", S.DISPATCHED: ":rocket:",
    S.DEPLOYED: ":package:", S.VERIFIED: ":large_green_circle:", S.FAILED: ":red_circle:",
    S.REJECTED: ":no_entry:", S.EXPIRED: ":alarm_clock:", S.CANCELLED: ":heavy_multiplication_x:",
    S.SUPERSEDED: ":fast_forward:", S.VOIDED: ":warning:",
}
GATE_ICON = {GateStatus.PASSED: ":white_check_mark:", GateStatus.FAILED: ":x:", GateStatus.ERRORED: ":warning:"}
SECTION_LIMIT = 2900  # Slack refuses section text over 3000 characters


def _clip(text: str, limit: int = SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(dt: datetime | None) -> str:
    return f"{dt:%Y-%m-%d %H:%M} UTC" if dt else "—"


def short_digest(digest: str | None) -> str:
    if not digest:
        return "—"
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def gate_line(result: GateResult) -> str:
    line = f"{GATE_ICON[result.status]} *{esc(result.title)}*: {esc(result.reason)}"
    if result.blocks and result.next_step:
        line += f"\n      _{esc(result.next_step)}_"
    return line


def gate_lines(report: GateReport | None, *, only_blocking: bool = False) -> list[str]:
    if report is None:
        return []
    results = report.blocking if only_blocking else report.results
    return [gate_line(r) for r in results]


def _chunks(lines: Sequence[str]) -> list[str]:
    """Group lines into section-sized texts."""
    out: list[str] = []
    current = ""
    for line in lines:
        line = _clip(line, 1000)
        if current and len(current) + len(line) + 1 > SECTION_LIMIT:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return out


def approval_card(view: PromotionView) -> list[Block]:
    """The card in the service channel; its header always shows the current state."""
    status = S(view.status)
    noun = "Rollback" if view.kind == "rollback" else "Promotion"
    header = f"{noun}: {view.service} → {view.target_environment} · {status.label}"
    commit = view.source_commit or "—"
    if view.commit_url:
        commit = f"<{view.commit_url}|{esc(view.source_commit[:12])}>"
    approved = view.approved_by
    fields = [
        MarkdownTextObject(text=f"*Service*\n{esc(view.service)}"),
        MarkdownTextObject(text=f"*Tag*\n`{esc(view.tag)}`"),
        MarkdownTextObject(text=f"*Digest*\n`{esc(short_digest(view.digest))}`"),
        MarkdownTextObject(text=f"*Commit*\n{commit}"),
        MarkdownTextObject(text=f"*From → to*\n{esc(view.source_environment or '—')} → "
                                f"{esc(view.target_environment)}"),
        MarkdownTextObject(text=f"*Requested by*\n<@{esc(view.requested_by)}>"
                                if view.requested_by != "promobot" else "*Requested by*\npromobot (automatic)"),
    ]
    if view.required_approvals:
        fields.append(MarkdownTextObject(
            text=f"*Approvals*\n{len(approved)} of {view.required_approvals}"
                 + (": " + ", ".join(f"<@{esc(a)}>" for a in approved) if approved else "")))
    if status is S.PENDING_APPROVAL and view.expires_at:
        fields.append(MarkdownTextObject(text=f"*Expires*\n{_when(view.expires_at)}"))
    if view.replaces_tag:
        fields.append(MarkdownTextObject(text=f"*Replaces*\n`{esc(view.replaces_tag)}` in "
                                              f"{esc(view.target_environment)}"))
    if view.run_url:
        fields.append(MarkdownTextObject(text=f"*Run*\n<{view.run_url}|{esc(view.pipeline_run_id or 'run')}>"))
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=_clip(f"{header}", 150), emoji=True)),
        SectionBlock(fields=fields[:10]),
    ]
    if view.reason and status in (S.REJECTED, S.VOIDED, S.FAILED, S.SUPERSEDED, S.CANCELLED, S.EXPIRED) \
            or (view.reason and view.kind == "rollback"):
        label = "Reason" if status is not S.PENDING_APPROVAL else "Why"
        by = f" (<@{esc(view.decided_by)}>)" if view.decided_by and status in (S.REJECTED, S.CANCELLED) else ""
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_clip(f"*{label}*{by}: {esc(view.reason)}"))))
    lines = gate_lines(view.report)
    if lines:
        blocks.append(DividerBlock())
        for chunk in _chunks(["*Gates*"] + lines):
            blocks.append(SectionBlock(text=MarkdownTextObject(text=chunk)))
    if status is S.PENDING_APPROVAL:
        blocks.append(ActionsBlock(block_id=f"decide:{view.id}", elements=[
            ButtonElement(text="Approve", action_id=APPROVE, value=view.id, style="primary",
                          confirm=ConfirmObject(
                              title="Approve this promotion?",
                              text=f"Deploy {view.service} {view.tag} to {view.target_environment}. "
                                   "promobot checks every gate again before it dispatches.",
                              confirm="Approve", deny="Not yet")),
            ButtonElement(text="Reject", action_id=REJECT, value=view.id, style="danger"),
            ButtonElement(text="Cancel request", action_id=CANCEL, value=view.id),
        ]))
    context = f"`{view.id}` · requested {_when(view.requested_at)}"
    if view.dry_run and status in (S.DISPATCHED, S.DEPLOYED, S.VERIFIED):
        context += " · dry run: nothing was dispatched"
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=context)]))
    return blocks


def card_text(view: PromotionView) -> str:
    """The notification fallback text of the card."""
    return (f"{'Rollback' if view.kind == 'rollback' else 'Promotion'} {view.service} {view.tag} → "
            f"{view.target_environment}: {S(view.status).label}")


def refusal(report: GateReport, *, kind: str = "promotion") -> list[Block]:
    verb = "roll back" if kind == "rollback" else "promote"
    head = (f":no_entry: Cannot {verb} *{esc(report.service)}* `{esc(report.tag)}` to "
            f"*{esc(report.target_environment)}*: {len(report.blocking)} of {len(report.results)} gates refused.")
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=_clip(head)))]
    for chunk in _chunks(gate_lines(report, only_blocking=True)):
        blocks.append(SectionBlock(text=MarkdownTextObject(text=chunk)))
    passed = [r.title for r in report.results if not r.blocks]
    if passed:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_clip("Passed: " + ", ".join(passed), 1900))]))
    return blocks


def refusal_text(report: GateReport, *, kind: str = "promotion") -> str:
    verb = "roll back" if kind == "rollback" else "promote"
    reasons = "; ".join(f"{r.title}: {r.reason}" for r in report.blocking)
    return f"Cannot {verb} {report.service} {report.tag} to {report.target_environment}: {reasons}"


def eligibility(report: GateReport) -> list[Block]:
    """The full report for --check: every gate, nothing requested."""
    icon = ":white_check_mark:" if report.eligible else ":no_entry:"
    verdict = "eligible" if report.eligible else "not eligible"
    head = (f"{icon} *{esc(report.service)}* `{esc(report.tag)}` → *{esc(report.target_environment)}* is "
            f"{verdict} (check only; nothing was requested).")
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=_clip(head)))]
    for chunk in _chunks(gate_lines(report)):
        blocks.append(SectionBlock(text=MarkdownTextObject(text=chunk)))
    return blocks


def message(text: str) -> list[Block]:
    return [SectionBlock(text=MarkdownTextObject(text=_clip(text)))]


def reject_modal(promotion_id: str, service: str, tag: str, environment: str) -> View:
    return View(
        type="modal", callback_id=REJECT_VIEW, private_metadata=promotion_id,
        title=PlainTextObject(text="Reject promotion"), submit=PlainTextObject(text="Reject"),
        close=PlainTextObject(text="Back"),
        blocks=[
            SectionBlock(text=MarkdownTextObject(
                text=f"Reject *{esc(service)}* `{esc(tag)}` → *{esc(environment)}*. The requester sees your reason.")),
            InputBlock(block_id="reason", label=PlainTextObject(text="Reason"),
                       element=PlainTextInputElement(action_id="value", multiline=True, min_length=3,
                                                     max_length=500)),
        ])
