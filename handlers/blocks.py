"""Block Kit rendering: pure functions from promotion state to typed blocks.

Everything user-supplied passes through ``esc`` (mrkdwn) or goes into a
``plain_text`` object, so that a reason such as ``<!channel>`` or ``*bold*``
is shown, not executed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Sequence

from slack_sdk.models.blocks import (ActionsBlock, Block, ButtonElement, ConfirmObject, ContextBlock,
                                     DividerBlock, HeaderBlock, InputBlock, MarkdownTextObject,
                                     PlainTextInputElement, PlainTextObject, SectionBlock)
from slack_sdk.models.views import View

from bot.config import format_duration
from bot.roles import CardEvidence, PromotionView, SourceChanges, WindowState
from bot.service_status import EnvironmentStatus, OverviewRow, ServiceStatus
from bot.states import PromotionStatus as S
from bot.text import approver_mention, esc, evidence_text, link, literal, mention
from checks.base import DeploymentRecord, GateReport, GateResult, GateStatus, VerificationRecord

APPROVE = "promotion.approve"
REJECT = "promotion.reject"
CANCEL = "promotion.cancel"
REVOKE = "promotion.revoke"
REJECT_VIEW = "promotion.reject_reason"

STATUS_ICON = {
    S.PENDING_APPROVAL: ":hourglass_flowing_sand:", S.APPROVED: ":white_check_mark:", S.DISPATCHED: ":rocket:",
    S.DEPLOYED: ":package:", S.VERIFIED: ":large_green_circle:", S.FAILED: ":red_circle:",
    S.REJECTED: ":no_entry:", S.EXPIRED: ":alarm_clock:", S.CANCELLED: ":heavy_multiplication_x:",
    S.SUPERSEDED: ":fast_forward:", S.VOIDED: ":warning:",
}
GATE_ICON = {GateStatus.PASSED: ":white_check_mark:", GateStatus.FAILED: ":x:", GateStatus.ERRORED: ":warning:"}
SECTION_LIMIT = 2900  # Slack refuses section text over 3000 characters
MESSAGE_BLOCKS = 50  # Slack's limit for a message
HOME_BLOCKS = 100  # Slack's limit for a Home tab
CARD_COMMITS = 8
ENDED_WITH_REASON = (S.REJECTED, S.VOIDED, S.FAILED, S.SUPERSEDED, S.CANCELLED, S.EXPIRED)


def _clip(text: str, limit: int = SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(dt: datetime | None) -> str:
    return f"{dt:%Y-%m-%d %H:%M} UTC" if dt else "—"


def _ago(then: datetime, now: datetime | None) -> str:
    """``3 h ago`` relative to ``now``; the absolute time when there is no ``now``."""
    if now is None:
        return _when(then)
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


def _md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=_clip(text))


def _plain(text: str) -> PlainTextObject:
    """User text shown as typed: plain_text is never parsed for formatting or mentions."""
    return PlainTextObject(text=_clip(esc(text)), emoji=False)


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=_md(text))


def _chunks(lines: Sequence[str], limit: int = SECTION_LIMIT) -> list[str]:
    """Group lines into section-sized texts."""
    out: list[str] = []
    current = ""
    for line in lines:
        line = _clip(line, 1000)
        if current and len(current) + len(line) + 1 > limit:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return out


# --- gates ----------------------------------------------------------------------------


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


# --- the approval card ------------------------------------------------------------------


def _deployment_line(d: DeploymentRecord, now: datetime | None, *, with_tag: bool = False) -> str:
    icon = ":white_check_mark:" if d.status == "success" else ":x:"
    tag = f"`{esc(short_tag(d.tag))}` " if with_tag else ""
    return f"{icon} {tag}deployment {esc(d.status)} {_ago(d.finished_at, now)}{_run(d)}"


def _run(d: DeploymentRecord) -> str:
    if not (d.url or d.run_id):
        return ""
    return " · " + link(d.url, f"run {esc(d.run_id)}" if d.run_id else "run")


def _verification_line(v: VerificationRecord, now: datetime | None, *, with_tag: bool = False) -> str:
    icon = ":white_check_mark:" if v.result == "passed" else ":x:"
    tag = f"`{esc(short_tag(v.tag))}` " if with_tag else ""
    checks = ", ".join(f"{esc(k)} {esc(val)}" for k, val in list((v.checks or {}).items())[:6])
    report = f" · {link(v.url, 'report')}" if v.url else ""
    return (f"{icon} {tag}verification {esc(v.result)} {_ago(v.finished_at, now)}" + (f" ({checks})" if checks else "")
            + report)


def _timeline(deployments: Sequence[DeploymentRecord], verifications: Sequence[VerificationRecord],
              now: datetime | None, *, with_tag: bool, limit: int = 5) -> list[str]:
    events = [(d.finished_at, _deployment_line(d, now, with_tag=with_tag)) for d in deployments]
    events += [(v.finished_at, _verification_line(v, now, with_tag=with_tag)) for v in verifications]
    return [line for _, line in sorted(events, key=lambda e: e[0], reverse=True)[:limit]]


def _changes_text(view: PromotionView, ev: CardEvidence) -> str | None:
    changes: SourceChanges | None = ev.changes
    if changes is None:
        return f"*Changes*: {esc(ev.changes_note)}" if ev.changes_note else None
    if ev.rolled_back_changes:
        head = (f"*Taken out by this rollback*: {changes.total} commit(s) in `{esc(view.replaces_tag or '')}` "
                f"that `{esc(view.tag)}` does not have")
    else:
        head = (f"*Changes since `{esc(view.replaces_tag or '')}`* in {esc(view.target_environment)}: "
                f"{changes.total} commit(s)")
    if changes.compare_url:
        head += f" · {link(changes.compare_url, 'compare')}"
    lines = [head]
    base = changes.repository_url
    for c in changes.commits[:CARD_COMMITS]:
        sha = link(f"{base}/commit/{c.sha}" if base else None, f"`{esc(c.sha[:7])}`")
        pr = ""
        if c.pull_request:
            pr = f" ({link(f'{base}/pull/{c.pull_request}' if base else None, f'#{c.pull_request}')})"
        lines.append(f"• {sha} {esc(_clip(c.title, 120))}{pr} — {esc(c.author)}")
    shown = min(len(changes.commits), CARD_COMMITS)
    if changes.total > shown:
        lines.append(f"…and {changes.total - shown} more")
    return "\n".join(lines)


def _window_text(w: WindowState) -> str:
    if w.freeze_reason:
        opens = f"; opens {_when(w.next_opening)}" if w.next_opening else ""
        return f":snowflake: frozen until {esc(w.freeze_end)}: {literal(w.freeze_reason)}{opens}"
    if not w.windows:
        return "no window: any time"
    spans = ", ".join(esc(x) for x in w.windows) + f" {esc(w.timezone)}"
    if w.open_now:
        return f"open now ({spans})"
    return f"closed ({spans}); opens {_when(w.next_opening)}" if w.next_opening else f"closed ({spans})"


def _soak_text(ev: CardEvidence) -> str | None:
    soak = ev.soak
    if soak is None:
        return None
    if soak.since is None:
        return f"not verified in {esc(soak.environment)} yet"
    needs = format_duration(soak.required)
    if soak.done:
        return f":white_check_mark: {format_duration(soak.soaked)} in {esc(soak.environment)} (needs {needs})"
    return (f":hourglass: {format_duration(soak.soaked)} of {needs} in {esc(soak.environment)}; "
            f"eligible {_when(soak.eligible_at)}")


def _approvals_text(view: PromotionView, sep: str = "\n") -> str:
    approved = view.approved_by
    text = f"{len(approved)} of {view.required_approvals}"
    if approved:
        text += ": " + ", ".join(mention(a) for a in approved)
    if S(view.status) is S.PENDING_APPROVAL and len(approved) < view.required_approvals:
        who = ", ".join(approver_mention(a) for a in view.approvers)
        text += f"{sep}waiting for {view.required_approvals - len(approved)} more from {who}"
    return text


def _facts(view: PromotionView) -> SectionBlock:
    """What would run: service, tag, digest, commit, where from and to, who asked, what it replaces."""
    ev = view.evidence
    commit = link(view.commit_url, esc(view.source_commit[:12])) if view.source_commit else "—"
    source = view.source_environment or ("its own history" if view.kind == "rollback" else "—")
    fields = [
        _md(f"*Service*\n{esc(view.service)}"),
        _md(f"*Tag*\n`{esc(view.tag)}`"),
        _md(f"*Digest*\n`{esc(short_digest(view.digest))}`"),
        _md(f"*Commit*\n{commit}"),
        _md(f"*From → to*\n{esc(source)} → {esc(view.target_environment)}"),
        _md("*Requested by*\n" + (mention(view.requested_by) if view.requested_by != "promobot"
                                  else "promobot (automatic)")),
    ]
    if view.replaces_tag:
        digest = ev.replaces_digest if ev else None
        fields.append(_md(f"*Replaces*\n`{esc(view.replaces_tag)}`"
                          + (f" `{esc(short_digest(digest))}`" if digest else "")))
    if view.run_url:
        fields.append(_md(f"*Run*\n{link(view.run_url, esc(view.pipeline_run_id or 'run'))}"))
    return SectionBlock(fields=fields)


def _rollback_summary(view: PromotionView) -> SectionBlock:
    """Exactly which tag and digest a rollback deploys, and which it replaces."""
    replaces = ""
    if view.replaces_tag and view.replaces_tag != view.tag:
        digest = view.evidence.replaces_digest if view.evidence else None
        replaces = f", replacing `{esc(view.replaces_tag)}` (`{esc(digest or '—')}`)"
    return _section(f":rewind: Rolls {esc(view.target_environment)} back to `{esc(view.tag)}` "
                    f"(`{esc(view.digest)}`){replaces}.")


def _decision(view: PromotionView) -> SectionBlock | None:
    """Approvals and whom they wait for, expiry, soak and the target's window."""
    ev = view.evidence
    fields = []
    if view.required_approvals:
        fields.append(_md(f"*Approvals*\n{_approvals_text(view)}"))
    if S(view.status) is S.PENDING_APPROVAL and view.expires_at:
        fields.append(_md(f"*Expires*\n{_when(view.expires_at)}"))
    soak = _soak_text(ev) if ev else None
    if soak:
        fields.append(_md(f"*Soak*\n{soak}"))
    if ev and ev.window:
        fields.append(_md(f"*Window ({esc(view.target_environment)})*\n{_window_text(ev.window)}"))
    return SectionBlock(fields=fields) if fields else None


def _history(view: PromotionView) -> list[Block]:
    """The source changes, the artifact's record before, and the target environment's recent record."""
    ev = view.evidence
    if ev is None:
        return []
    blocks: list[Block] = []
    changes = _changes_text(view, ev)
    if changes:
        blocks += [DividerBlock(), _section(changes)]
    if ev.previous_environment:
        lines = _timeline(ev.previous_deployments, ev.previous_verifications, ev.now, with_tag=False)
        where = ("earlier in " if view.kind == "rollback" else "in ") + esc(ev.previous_environment)
        blocks.append(_section(f"*`{esc(view.tag)}` {where}*\n"
                               + ("\n".join(lines) or "no deployment or verification recorded")))
    recent = _timeline(ev.target_deployments, ev.target_verifications, ev.now, with_tag=True)
    blocks.append(_section(f"*Recent {esc(view.target_environment)}*\n"
                           + ("\n".join(recent) or "nothing deployed there yet")))
    return blocks


def _buttons(view: PromotionView) -> ActionsBlock:
    noun = "rollback" if view.kind == "rollback" else "promotion"
    buttons = [
        ButtonElement(text="Approve", action_id=APPROVE, value=view.id, style="primary",
                      confirm=ConfirmObject(
                          title=f"Approve this {noun}?",
                          text=f"Deploy {esc(view.service)} `{esc(view.tag)}` to {esc(view.target_environment)}. "
                               "promobot checks every gate again before it dispatches.",
                          confirm="Approve", deny="Not yet")),
        ButtonElement(text="Reject", action_id=REJECT, value=view.id, style="danger"),
        ButtonElement(text="Cancel request", action_id=CANCEL, value=view.id),
    ]
    if view.approved_by:
        buttons.append(ButtonElement(text="Revoke my approval", action_id=REVOKE, value=view.id,
                                     confirm=ConfirmObject(title="Revoke your approval?",
                                                           text="Your approval no longer counts.",
                                                           confirm="Revoke", deny="Keep it")))
    return ActionsBlock(block_id=f"decide:{view.id}", elements=buttons)


def approval_card(view: PromotionView) -> list[Block]:
    """The card in the service channel; its header always shows the current state and buttons
    are there only while the request waits for a decision."""
    status = S(view.status)
    noun = "Rollback" if view.kind == "rollback" else "Promotion"
    header = f"{noun}: {view.service} → {view.target_environment} · {status.label}"
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text=_clip(header, 150), emoji=True))]
    if view.kind == "rollback":
        blocks.append(_rollback_summary(view))
    blocks.append(_facts(view))
    decision = _decision(view)
    if decision:
        blocks.append(decision)
    if view.reason and (status in ENDED_WITH_REASON or view.kind == "rollback"):
        label = "Reason" if status in ENDED_WITH_REASON else "Why"
        blocks.append(SectionBlock(text=_plain(f"{label}: {view.reason}")))
    blocks += _history(view)
    lines = gate_lines(view.report)
    if lines:
        blocks.append(DividerBlock())
        blocks += [_section(chunk) for chunk in _chunks(["*Gates*"] + lines)]
    if status is S.PENDING_APPROVAL:
        blocks.append(_buttons(view))
    context = f"`{view.id}` · requested {_when(view.requested_at)}"
    if view.decided_by and status in (S.REJECTED, S.CANCELLED):
        context += f" · {status.label.lower()} by {mention(view.decided_by)}"
    if view.dry_run and status in (S.DISPATCHED, S.DEPLOYED, S.VERIFIED):
        context += " · dry run: nothing was dispatched"
    blocks.append(ContextBlock(elements=[_md(context)]))
    return blocks


def card_text(view: PromotionView) -> str:
    """The notification fallback text of the card."""
    return (f"{'Rollback' if view.kind == 'rollback' else 'Promotion'} {esc(view.service)} {esc(view.tag)} → "
            f"{esc(view.target_environment)}: {S(view.status).label}")


# --- replies ---------------------------------------------------------------------------


def refusal(report: GateReport, *, kind: str = "promotion") -> list[Block]:
    verb = "roll back" if kind == "rollback" else "promote"
    head = (f":no_entry: Cannot {verb} *{esc(report.service)}* `{esc(report.tag)}` to "
            f"*{esc(report.target_environment)}*: {len(report.blocking)} of {len(report.results)} gates refused.")
    blocks: list[Block] = [_section(head)]
    blocks += [_section(chunk) for chunk in _chunks(gate_lines(report, only_blocking=True))]
    passed = [r.title for r in report.results if not r.blocks]
    if passed:
        blocks.append(ContextBlock(elements=[_md(_clip("Passed: " + ", ".join(passed), 1900))]))
    return blocks


def refusal_text(report: GateReport, *, kind: str = "promotion") -> str:
    verb = "roll back" if kind == "rollback" else "promote"
    reasons = "; ".join(f"{esc(r.title)}: {evidence_text(r.reason, r.evidence)}" for r in report.blocking)
    return f"Cannot {verb} {esc(report.service)} {esc(report.tag)} to {esc(report.target_environment)}: {reasons}"


def eligibility(report: GateReport) -> list[Block]:
    """The full report for --check: every gate, nothing requested."""
    icon = ":white_check_mark:" if report.eligible else ":no_entry:"
    verdict = "eligible" if report.eligible else "not eligible"
    head = (f"{icon} *{esc(report.service)}* `{esc(report.tag)}` → *{esc(report.target_environment)}* is "
            f"{verdict} (check only; nothing was requested).")
    return [_section(head)] + [_section(chunk) for chunk in _chunks(gate_lines(report))]


def message(text: str) -> list[Block]:
    return [_section(text)]


def reject_modal(promotion_id: str, service: str, tag: str, environment: str) -> View:
    return View(
        type="modal", callback_id=REJECT_VIEW, private_metadata=promotion_id,
        title=PlainTextObject(text="Reject promotion"), submit=PlainTextObject(text="Reject"),
        close=PlainTextObject(text="Back"),
        blocks=[
            _section(f"Reject *{esc(service)}* `{esc(tag)}` → *{esc(environment)}*. The requester sees your reason."),
            InputBlock(block_id="reason", label=PlainTextObject(text="Reason"),
                       element=PlainTextInputElement(action_id="value", multiline=True, min_length=3,
                                                     max_length=500)),
        ])


# --- /status ---------------------------------------------------------------------------


def pending_line(view: PromotionView, now: datetime | None = None) -> str:
    """One line about an active promotion: what, and whom it waits for."""
    status = S(view.status)
    noun = "rollback" if view.kind == "rollback" else "promotion"
    line = (f"{STATUS_ICON[status]} {noun} `{view.id}` of `{esc(short_tag(view.tag))}` by "
            f"{mention(view.requested_by)}: {status.label.lower()}")
    if status is S.PENDING_APPROVAL:
        line += f" ({_approvals_text(view, '; ')})"
        if view.expires_at:
            line += f"; expires {_when(view.expires_at)}"
    elif view.run_url:
        line += f" · {link(view.run_url, 'run')}"
    return line


def _environment_lines(e: EnvironmentStatus, now: datetime) -> list[str]:
    if e.tag is None:
        lines = [f"• *{esc(e.environment)}*: nothing deployed"]
    else:
        lines = [f"• *{esc(e.environment)}*: `{esc(e.tag)}` `{esc(short_digest(e.digest))}`"]
        if e.deployed:
            lines.append(f"    deployed {_ago(e.deployed.finished_at, now)}{_run(e.deployed)}")
        if e.verification:
            lines.append("    " + _verification_line(e.verification, now))
        else:
            lines.append("    :hourglass: not verified since deployment")
        if e.next_environment:
            nxt = esc(e.next_environment)
            if e.in_next:
                lines.append(f"    already in {nxt}")
            elif e.verification is None or e.verification.result != "passed":
                lines.append(f"    not eligible for {nxt} until verified here")
            else:
                soak = e.soak
                progress = (f"soak {format_duration(soak.soaked)} of {format_duration(soak.required)}; "
                            if soak and soak.required > timedelta(0) else "")
                if e.eligible_at is None:
                    when = f"once {nxt}'s window opens (no opening within a week)"
                else:
                    when = "now" if e.eligible_at <= now else _when(e.eligible_at)
                    if e.next_window and not e.next_window.open_now:
                        when += f" (when {nxt}'s window opens)"
                lines.append(f"    {progress}eligible for {nxt} {when}")
    if e.hold:
        who = f" by {mention(e.hold.held_by)}" if e.hold.held_by else ""
        since = f" since {_when(e.hold.held_at)}" if e.hold.held_at else ""
        lines.append(f"    :raised_hand: `{esc(e.tag)}` on hold{who}{since}: {literal(e.hold.reason)}")
    if e.lock:
        lines.append(f"    :lock: locked by {mention(e.lock.locked_by)} since {_when(e.lock.locked_at)}: "
                     f"{literal(e.lock.reason)}")
    if e.window.freeze_reason or (e.window.windows and not e.window.open_now):
        lines.append(f"    window: {_window_text(e.window)}")
    if e.pending:
        lines.append("    " + pending_line(e.pending, now))
    return lines


def service_status(status: ServiceStatus) -> list[Block]:
    """``/status SERVICE``: one section per environment."""
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text=_clip(f"{status.service}: where it runs", 150)))]
    for e in status.environments:
        blocks.append(_section("\n".join(_environment_lines(e, status.now))))
    blocks.append(ContextBlock(elements=[_md(f"as of {_when(status.now)} · `/status` for every service")]))
    return blocks[:MESSAGE_BLOCKS]


def service_status_text(status: ServiceStatus) -> str:
    return f"Status of {esc(status.service)}: " + ", ".join(
        f"{esc(e.environment)} {esc(e.tag or '—')}" for e in status.environments)


OVERVIEW_LEGEND = ("✓ verified · ✗ verification failed · … not verified yet · ⏳ promotion in progress · "
                   "🔒 locked · ✋ artifact on hold")


def overview_line(row: OverviewRow) -> str:
    cells = []
    for c in row.cells:
        mark = {"passed": "✓", "failed": "✗"}.get(c.verification or "", "…") if c.tag else ""
        extra = ("⏳" if c.pending else "") + ("🔒" if c.locked else "") + ("✋" if c.held else "")
        tag = f"`{esc(short_tag(c.tag))}`" if c.tag else "—"
        cells.append(f"{esc(c.environment)} {tag}{mark}{extra}")
    return f"*{esc(row.service)}*  " + " · ".join(cells)


def _grid(rows: Sequence[OverviewRow], budget: int) -> list[Block]:
    """Service lines packed into at most ``budget`` blocks; the last says what did not fit."""
    chunks = _chunks([overview_line(r) for r in rows])
    if len(chunks) <= budget:
        return [_section(c) for c in chunks]
    shown = chunks[: budget - 1]
    left = len(rows) - sum(c.count("\n") + 1 for c in shown)
    return [_section(c) for c in shown] + [ContextBlock(elements=[_md(
        f"…and {left} more services. `/status SERVICE` shows one in full.")])]


def overview(rows: Sequence[OverviewRow], now: datetime) -> list[Block]:
    """``/status``: every service in one message, within Slack's 50 blocks and 3000 characters a section."""
    if not rows:
        return message("No services are configured in promobot.yml.")
    attention = sum(1 for r in rows if r.needs_attention)
    head = HeaderBlock(text=PlainTextObject(text=f"{len(rows)} services at a glance"))
    legend = ContextBlock(elements=[_md(f"{OVERVIEW_LEGEND} · {attention} need attention · as of {_when(now)} · "
                                        "`/status SERVICE` for details")])
    return [head, legend] + _grid(rows, MESSAGE_BLOCKS - 2)


# --- App Home --------------------------------------------------------------------------


def _home_entry(view: PromotionView) -> str:
    noun = "Rollback" if view.kind == "rollback" else "Promotion"
    where = f" · card in <#{view.channel}>" if view.channel else ""
    return (f"*{noun}: {esc(view.service)}* `{esc(view.tag)}` → *{esc(view.target_environment)}* "
            f"(`{view.id}`)\nrequested by {mention(view.requested_by)} {_when(view.requested_at)} · "
            f"{_approvals_text(view, '; ')} · expires {_when(view.expires_at)}{where}")


def home(waiting: Sequence[PromotionView], mine: Sequence[PromotionView], rows: Sequence[OverviewRow],
         now: datetime) -> View:
    """The Home tab: what waits for my approval first, then my requests, then every service."""
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text="Waiting for my approval"))]
    if waiting:
        blocks += [_section(_home_entry(v)) for v in waiting[:20]]
        if len(waiting) > 20:
            blocks.append(ContextBlock(elements=[_md(f"…and {len(waiting) - 20} more.")]))
    else:
        blocks.append(_section("Nothing waits for you. :tada:"))
    blocks += [DividerBlock(), HeaderBlock(text=PlainTextObject(text="My requests"))]
    if mine:
        lines = [f"{STATUS_ICON[S(v.status)]} `{v.id}` {esc(v.service)} `{esc(short_tag(v.tag))}` → "
                 f"{esc(v.target_environment)}: {S(v.status).label.lower()} · {_when(v.requested_at)}" for v in mine]
        blocks += [_section(c) for c in _chunks(lines)]
    else:
        blocks.append(_section("You have not requested anything yet. Try `/promote help`."))
    blocks += [DividerBlock(), HeaderBlock(text=PlainTextObject(text="Every service")),
               ContextBlock(elements=[_md(f"{OVERVIEW_LEGEND} · as of {_when(now)}")])]
    blocks += _grid(rows, HOME_BLOCKS - len(blocks)) if rows else [_section("No services configured.")]
    return View(type="home", blocks=blocks)
