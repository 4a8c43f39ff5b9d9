"""``/status``: one service per environment, or every service at a glance within Slack's limits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from slack_sdk.models.blocks import Block, ContextBlock, HeaderBlock, PlainTextObject

from bot.clock import format_duration, format_when
from bot.engine.roles import PromotionView
from bot.engine.status import EnvironmentStatus, OverviewRow, ServiceStatus
from bot.text import clip, esc, link, literal, mention
from handlers.blocks.common import (
    MESSAGE_BLOCKS,
    STATUS_ICON,
    ago,
    approvals_text,
    chunks,
    md,
    message,
    run_link,
    section,
    short_digest,
    short_tag,
    soak_note,
    verification_line,
    window_text,
)
from storage.records import OutOfBandRecord
from storage.statuses import PromotionKind, VerificationResult
from storage.statuses import PromotionStatus as S


def pending_line(view: PromotionView, now: datetime | None = None) -> str:
    """One line about an active promotion: what, and whom it waits for."""
    status = S(view.status)
    noun = "rollback" if view.kind == PromotionKind.ROLLBACK else "promotion"
    if view.expedited:
        noun = "EXPEDITED promotion"
    line = (
        f"{STATUS_ICON[status]} {noun} `{view.id}` of `{esc(short_tag(view.tag))}` by "
        f"{mention(view.requested_by)}: {status.label.lower()}"
    )
    if status is S.PENDING_APPROVAL:
        line += f" ({approvals_text(view, '; ')})"
        if view.expires_at:
            line += f"; expires {format_when(view.expires_at)}"
    elif view.run_url:
        line += f" · {link(view.run_url, 'run')}"
    return line


def _environment_lines(e: EnvironmentStatus, now: datetime) -> list[str]:
    if e.tag is None:
        lines = [f"• *{esc(e.environment)}*: nothing deployed"]
    else:
        lines = [f"• *{esc(e.environment)}*: `{esc(e.tag)}` `{esc(short_digest(e.digest))}`"]
        if e.deployed:
            lines.append(f"    deployed {ago(e.deployed.finished_at, now)}{run_link(e.deployed)}")
        if e.verification:
            lines.append("    " + verification_line(e.verification, now))
        else:
            lines.append("    :hourglass: not verified since deployment")
        if e.next_environment:
            nxt = esc(e.next_environment)
            if e.in_next:
                lines.append(f"    already in {nxt}")
            elif e.verification is None or e.verification.result != VerificationResult.PASSED:
                lines.append(f"    not eligible for {nxt} until verified here")
            else:
                soak = e.soak
                progress = (
                    f"soak {format_duration(soak.soaked)} of {format_duration(soak.required)}; "
                    if soak and soak.required > timedelta(0)
                    else ""
                )
                if e.eligible_at is None:
                    when = f"once {nxt}'s window opens (no opening within a week)"
                else:
                    when = "now" if e.eligible_at <= now else format_when(e.eligible_at)
                    if e.next_window and not e.next_window.open_now:
                        when += f" (when {nxt}'s window opens)"
                lines.append(f"    {progress}eligible for {nxt} {when}{soak_note(soak)}")
    if e.hold:
        who = f" by {mention(e.hold.held_by)}" if e.hold.held_by else ""
        since = f" since {format_when(e.hold.held_at)}" if e.hold.held_at else ""
        lines.append(f"    :raised_hand: `{esc(e.tag)}` on hold{who}{since}: {literal(e.hold.reason)}")
    if e.lock:
        lines.append(
            f"    :lock: locked by {mention(e.lock.locked_by)} since {format_when(e.lock.locked_at)}: "
            f"{literal(e.lock.reason)}"
        )
    if e.window.freeze_reason or (e.window.windows and not e.window.open_now):
        lines.append(f"    window: {window_text(e.window)}")
    if e.pending:
        lines.append("    " + pending_line(e.pending, now))
    if e.out_of_band:
        lines.append("    " + out_of_band_line(e.out_of_band, now))
    return lines


def out_of_band_line(r: OutOfBandRecord, now: datetime) -> str:
    """The flag on an environment: what was reported, who reported it, when, and that it is not trusted."""
    answer = "recorded" if r.accepted else "refused"
    run = f" (run {esc(r.run_id)})" if r.run_id else ""
    return (
        f":warning: out-of-band {r.kind} of `{esc(r.tag)}` ({esc(r.outcome)}) reported by {esc(r.reported_by)}"
        f"{run} {ago(r.reported_at, now)}, {answer}: {esc(r.reason)}. Never evidence: promote to replace it."
    )


def service_status(status: ServiceStatus) -> list[Block]:
    """``/status SERVICE``: one section per environment."""
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text=clip(f"{status.service}: where it runs", 150)))]
    for e in status.environments:
        blocks.append(section("\n".join(_environment_lines(e, status.now))))
    blocks.append(ContextBlock(elements=[md(f"as of {format_when(status.now)} · `/status` for every service")]))
    return blocks[:MESSAGE_BLOCKS]


def service_status_text(status: ServiceStatus) -> str:
    return f"Status of {esc(status.service)}: " + ", ".join(
        f"{esc(e.environment)} {esc(e.tag or '—')}" for e in status.environments
    )


OVERVIEW_LEGEND = (
    "✓ verified · ✗ verification failed · … not verified yet · ⏳ promotion in progress · "
    "🔒 locked · ✋ artifact on hold · ⚠ out-of-band report (never evidence)"
)


def overview_line(row: OverviewRow) -> str:
    cells = []
    for c in row.cells:
        mark = {"passed": "✓", "failed": "✗"}.get(c.verification or "", "…") if c.tag else ""
        extra = (
            ("⏳" if c.pending else "")
            + ("🔒" if c.locked else "")
            + ("✋" if c.held else "")
            + ("⚠" if c.out_of_band else "")
        )
        tag = f"`{esc(short_tag(c.tag))}`" if c.tag else "—"
        cells.append(f"{esc(c.environment)} {tag}{mark}{extra}")
    return f"*{esc(row.service)}*  " + " · ".join(cells)


def grid(rows: Sequence[OverviewRow], budget: int) -> list[Block]:
    """Service lines packed into at most ``budget`` blocks; the last says what did not fit."""
    texts = chunks([overview_line(r) for r in rows])
    if len(texts) <= budget:
        return [section(c) for c in texts]
    shown = texts[: budget - 1]
    left = len(rows) - sum(c.count("\n") + 1 for c in shown)
    return [section(c) for c in shown] + [
        ContextBlock(elements=[md(f"…and {left} more services. `/status SERVICE` shows one in full.")])
    ]


def overview(rows: Sequence[OverviewRow], now: datetime) -> list[Block]:
    """``/status``: every service in one message, within Slack's 50 blocks and 3000 characters a section."""
    if not rows:
        return message("No services are configured in promobot.yml.")
    attention = sum(1 for r in rows if r.needs_attention)
    head = HeaderBlock(text=PlainTextObject(text=f"{len(rows)} services at a glance"))
    legend = ContextBlock(
        elements=[
            md(
                f"{OVERVIEW_LEGEND} · {attention} need attention · as of {format_when(now)} · "
                "`/status SERVICE` for details"
            )
        ]
    )
    return [head, legend] + grid(rows, MESSAGE_BLOCKS - 2)
