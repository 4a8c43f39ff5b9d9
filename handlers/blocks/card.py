"""The approval card: what would run, who asked, the approvals, the history approvers decide on, and
the buttons while a decision is open; and the reject modal."""

from __future__ import annotations

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.clock import format_duration, format_when
from bot.engine.roles import CardEvidence, PromotionView, SourceChanges
from bot.text import clip, esc, link, literal, mention
from checks.base import GateStatus
from handlers.blocks.common import (
    APPROVE,
    CANCEL,
    ENDED_WITH_REASON,
    REJECT,
    REJECT_VIEW,
    REVOKE,
    approvals_text,
    chunks,
    gate_lines,
    md,
    plain,
    section,
    short_digest,
    soak_note,
    timeline,
    window_text,
)
from storage.statuses import PromotionKind
from storage.statuses import PromotionStatus as S

CARD_COMMITS = 8


def _changes_text(view: PromotionView, ev: CardEvidence) -> str | None:
    changes: SourceChanges | None = ev.changes
    if changes is None:
        return f"*Changes*: {esc(ev.changes_note)}" if ev.changes_note else None
    if ev.rolled_back_changes:
        head = (
            f"*Taken out by this rollback*: {changes.total} commit(s) in `{esc(view.replaces_tag or '')}` "
            f"that `{esc(view.tag)}` does not have"
        )
    else:
        head = (
            f"*Changes since `{esc(view.replaces_tag or '')}`* in {esc(view.target_environment)}: "
            f"{changes.total} commit(s)"
        )
    if changes.compare_url:
        head += f" · {link(changes.compare_url, 'compare')}"
    lines = [head]
    base = changes.repository_url
    for c in changes.commits[:CARD_COMMITS]:
        sha = link(f"{base}/commit/{c.sha}" if base else None, f"`{esc(c.sha[:7])}`")
        pr = ""
        if c.pull_request:
            pr = f" ({link(f'{base}/pull/{c.pull_request}' if base else None, f'#{c.pull_request}')})"
        lines.append(f"• {sha} {esc(clip(c.title, 120))}{pr} — {esc(c.author)}")
    shown = min(len(changes.commits), CARD_COMMITS)
    if changes.total > shown:
        lines.append(f"…and {changes.total - shown} more")
    return "\n".join(lines)


def _soak_text(ev: CardEvidence) -> str | None:
    soak = ev.soak
    if soak is None:
        return None
    if soak.since is None:
        return f"not verified in {esc(soak.environment)} yet"
    needs = format_duration(soak.required)
    if soak.done:
        return (
            f":white_check_mark: {format_duration(soak.soaked)} in {esc(soak.environment)} (needs {needs})"
            + soak_note(soak)
        )
    return (
        f":hourglass: {format_duration(soak.soaked)} of {needs} in {esc(soak.environment)}; "
        f"eligible {format_when(soak.eligible_at)}" + soak_note(soak)
    )


def _facts(view: PromotionView) -> SectionBlock:
    """What would run: service, tag, digest, commit, where from and to, who asked, what it replaces."""
    ev = view.evidence
    commit = link(view.commit_url, esc(view.source_commit[:12])) if view.source_commit else "—"
    source = view.source_environment or ("its own history" if view.kind == PromotionKind.ROLLBACK else "—")
    fields = [
        md(f"*Service*\n{esc(view.service)}"),
        md(f"*Tag*\n`{esc(view.tag)}`"),
        md(f"*Digest*\n`{esc(short_digest(view.digest))}`"),
        md(f"*Commit*\n{commit}"),
        md(f"*From → to*\n{esc(source)} → {esc(view.target_environment)}"),
        md(
            "*Requested by*\n"
            + (mention(view.requested_by) if view.requested_by != "promobot" else "promobot (automatic)")
        ),
    ]
    if view.replaces_tag:
        digest = ev.replaces_digest if ev else None
        fields.append(
            md(f"*Replaces*\n`{esc(view.replaces_tag)}`" + (f" `{esc(short_digest(digest))}`" if digest else ""))
        )
    if view.run_url:
        fields.append(md(f"*Run*\n{link(view.run_url, esc(view.pipeline_run_id or 'run'))}"))
    return SectionBlock(fields=fields)


def _rollback_summary(view: PromotionView) -> SectionBlock:
    """Exactly which tag and digest a rollback deploys, and which it replaces."""
    replaces = ""
    if view.replaces_tag and view.replaces_tag != view.tag:
        digest = view.evidence.replaces_digest if view.evidence else None
        replaces = f", replacing `{esc(view.replaces_tag)}` (`{esc(digest or '—')}`)"
    return section(
        f":rewind: Rolls {esc(view.target_environment)} back to `{esc(view.tag)}` (`{esc(view.digest)}`){replaces}."
    )


def _expedite_summary(view: PromotionView) -> SectionBlock:
    """Why it is expedited, what it skips, and who must approve."""
    report = view.report
    skipped = [r for r in (report.results if report else ()) if r.status is GateStatus.SKIPPED]
    names = ", ".join(esc(r.title) for r in skipped) or "nothing"
    environments = report.expedite.skipped_environments if report and report.expedite else ()
    comes = f" from {esc(view.source_environment or '—')}" + (
        f", skipping {esc(', '.join(environments))}" if environments else ""
    )
    return section(
        f":rotating_light: *Expedited*{comes}: {literal(view.expedite_reason or '')}\n"
        f"*Skipped gates*: {names}\n"
        f"Needs {view.required_approvals} approvals from the policy.expedite approvers; never the requester."
    )


def _preemption(view: PromotionView) -> SectionBlock:
    return section(
        f":hourglass: `{esc(view.preempts or '')}` is deployed and still awaits its verification: approving this "
        "rollback ends that wait (it is then failed, rolled back before its verification finished)."
    )


def _decision(view: PromotionView) -> SectionBlock | None:
    """Approvals and whom they wait for, expiry, soak and the target's window."""
    ev = view.evidence
    fields = []
    if view.required_approvals:
        fields.append(md(f"*Approvals*\n{approvals_text(view)}"))
    if S(view.status) is S.PENDING_APPROVAL and view.expires_at:
        fields.append(md(f"*Expires*\n{format_when(view.expires_at)}"))
    soak = _soak_text(ev) if ev else None
    if soak:
        fields.append(md(f"*Soak*\n{soak}"))
    if ev and ev.window:
        fields.append(md(f"*Window ({esc(view.target_environment)})*\n{window_text(ev.window)}"))
    return SectionBlock(fields=fields) if fields else None


def _history(view: PromotionView) -> list[Block]:
    """The source changes, the artifact's record before, and the target environment's recent record."""
    ev = view.evidence
    if ev is None:
        return []
    blocks: list[Block] = []
    changes = _changes_text(view, ev)
    if changes:
        blocks += [DividerBlock(), section(changes)]
    if ev.previous_environment:
        lines = timeline(ev.previous_deployments, ev.previous_verifications, ev.now, with_tag=False)
        where = ("earlier in " if view.kind == PromotionKind.ROLLBACK else "in ") + esc(ev.previous_environment)
        blocks.append(
            section(f"*`{esc(view.tag)}` {where}*\n" + ("\n".join(lines) or "no deployment or verification recorded"))
        )
    recent = timeline(ev.target_deployments, ev.target_verifications, ev.now, with_tag=True)
    blocks.append(
        section(f"*Recent {esc(view.target_environment)}*\n" + ("\n".join(recent) or "nothing deployed there yet"))
    )
    return blocks


def _buttons(view: PromotionView) -> ActionsBlock:
    noun = "rollback" if view.kind == PromotionKind.ROLLBACK else "promotion"
    buttons = [
        ButtonElement(
            text="Approve",
            action_id=APPROVE,
            value=view.id,
            style="primary",
            confirm=ConfirmObject(
                title=f"Approve this {noun}?",
                text=f"Deploy {esc(view.service)} `{esc(view.tag)}` to {esc(view.target_environment)}. "
                "promobot checks every gate again before it dispatches.",
                confirm="Approve",
                deny="Not yet",
            ),
        ),
        ButtonElement(text="Reject", action_id=REJECT, value=view.id, style="danger"),
        ButtonElement(text="Cancel request", action_id=CANCEL, value=view.id),
    ]
    if view.approved_by:
        buttons.append(
            ButtonElement(
                text="Revoke my approval",
                action_id=REVOKE,
                value=view.id,
                confirm=ConfirmObject(
                    title="Revoke your approval?",
                    text="Your approval no longer counts.",
                    confirm="Revoke",
                    deny="Keep it",
                ),
            )
        )
    return ActionsBlock(block_id=f"decide:{view.id}", elements=buttons)


def approval_card(view: PromotionView) -> list[Block]:
    """The card in the service channel; its header always shows the current state and buttons
    are there only while the request waits for a decision."""
    status = S(view.status)
    noun = "Rollback" if view.kind == PromotionKind.ROLLBACK else "Promotion"
    if view.expedited:
        noun = "EXPEDITED promotion"
    header = f"{noun}: {view.service} → {view.target_environment} · {status.label}"
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text=clip(header, 150), emoji=True))]
    if view.expedited:
        blocks.append(_expedite_summary(view))
    if view.kind == PromotionKind.ROLLBACK:
        blocks.append(_rollback_summary(view))
        if view.preempts and status is S.PENDING_APPROVAL:
            blocks.append(_preemption(view))
    blocks.append(_facts(view))
    decision = _decision(view)
    if decision:
        blocks.append(decision)
    if view.waiting and status is S.APPROVED:
        when = f"; next try at {view.next_try_at:%H:%M:%S} UTC" if view.next_try_at else ""
        blocks.append(section(f":hourglass: Approved, not dispatched yet. Waiting: {esc(view.waiting)}{when}."))
    if view.reason and (status in ENDED_WITH_REASON or view.kind == PromotionKind.ROLLBACK):
        label = "Reason" if status in ENDED_WITH_REASON else "Why"
        blocks.append(SectionBlock(text=plain(f"{label}: {view.reason}")))
    blocks += _history(view)
    lines = gate_lines(view.report)
    if lines:
        blocks.append(DividerBlock())
        blocks += [section(chunk) for chunk in chunks(["*Gates*"] + lines)]
    if status is S.PENDING_APPROVAL:
        blocks.append(_buttons(view))
    context = f"`{view.id}` · requested {format_when(view.requested_at)}"
    if view.decided_by and status in (S.REJECTED, S.CANCELLED):
        context += f" · {status.label.lower()} by {mention(view.decided_by)}"
    if view.dry_run and status in (S.DISPATCHED, S.DEPLOYED, S.VERIFIED):
        context += " · dry run: nothing was dispatched"
    blocks.append(ContextBlock(elements=[md(context)]))
    return blocks


def card_text(view: PromotionView) -> str:
    """The notification fallback text of the card."""
    noun = "EXPEDITED promotion" if view.expedited else "Rollback" if view.kind == "rollback" else "Promotion"
    return f"{noun} {esc(view.service)} {esc(view.tag)} → {esc(view.target_environment)}: {S(view.status).label}"


def reject_modal(promotion_id: str, service: str, tag: str, environment: str) -> View:
    return View(
        type="modal",
        callback_id=REJECT_VIEW,
        private_metadata=promotion_id,
        title=PlainTextObject(text="Reject promotion"),
        submit=PlainTextObject(text="Reject"),
        close=PlainTextObject(text="Back"),
        blocks=[
            section(f"Reject *{esc(service)}* `{esc(tag)}` → *{esc(environment)}*. The requester sees your reason."),
            InputBlock(
                block_id="reason",
                label=PlainTextObject(text="Reason"),
                element=PlainTextInputElement(action_id="value", multiline=True, min_length=3, max_length=500),
            ),
        ],
    )
