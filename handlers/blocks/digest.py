"""The daily digest as Block Kit: per-environment numbers against their targets, DORA, what missed."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, ContextBlock, DividerBlock, HeaderBlock, MarkdownTextObject, SectionBlock

from bot.clock import format_short
from bot.text import clip, esc
from storage import metrics
from storage.metrics.digest import Digest
from storage.metrics.report import percent

MAX_SERVICE_LINES = 15
MARK = {True: ":white_check_mark:", False: ":x:", None: ":heavy_minus_sign:"}


def _field(title: str, value: str, check: metrics.TargetCheck | None = None) -> MarkdownTextObject:
    target = f"\n{MARK[check.met]} target {check.goal}" if check else ""
    return MarkdownTextObject(text=clip(f"*{title}*\n{value}{target}", 2000))


def _lines(title: str, lines: list[str], total: int | None = None) -> SectionBlock:
    more = f"\n…and {total - len(lines)} more" if total is not None and total > len(lines) else ""
    count = f" ({total})" if total is not None else ""
    return SectionBlock(text=MarkdownTextObject(text=clip(f"*{title}{count}*\n" + "\n".join(lines) + more, 3000)))


def _link(url: str | None) -> str:
    return f" (<{url}|run>)" if url else ""


def _environment_section(environment: str, m: metrics.PromotionMetrics) -> SectionBlock:
    freq, success, ttp, approval = m.targets()
    kept = m.outcomes - m.rolled_back
    return SectionBlock(
        text=MarkdownTextObject(text=f"*{environment.capitalize()}*"),
        fields=[
            _field("Promotion frequency", f"{m.per_week:.1f} a week ({m.completed} in {m.weeks * 7:.0f} days)", freq),
            _field("Success rate", f"{percent(m.success_rate)} ({kept} of {m.outcomes} not rolled back)", success),
            _field("Time to promote", _spread(m.time_to_promote), ttp),
            _field("Approval duration", _spread(m.approval), approval),
            _field("Expedited", f"{m.expedited} of {m.outcomes} ended (critical security patches)"),
        ],
    )


def _spread(d: metrics.Durations) -> str:
    return (
        f"{format_short(d.median)} median, p90 {format_short(d.p90)} (n={d.count})"
        if d.count
        else "none in this period"
    )


def _dora_section(d: metrics.DoraMetrics) -> SectionBlock:
    restore = f"{format_short(d.time_to_restore.median)} median" if d.time_to_restore.count else "–"
    if d.open_incidents:
        restore += f", {d.open_incidents} not restored"
    return SectionBlock(
        text=MarkdownTextObject(text=f"*DORA ({d.environment})*"),
        fields=[
            _field("Deployment frequency", f"{d.per_week:.1f} a week"),
            _field(
                "Lead time (build → production)", f"{format_short(d.lead_time.median)} median (n={d.lead_time.count})"
            ),
            _field("Change failure rate", f"{percent(d.change_failure_rate)} ({d.failed_changes} of {d.changes})"),
            _field("Time to restore", restore),
        ],
    )


def digest_blocks(d: Digest) -> list[Block]:
    """The digest message: per-environment numbers against their targets, DORA, services that missed a
    target, the slowest approvals, failed verifications and rollbacks."""
    scope = ", ".join(d.config.services) if d.config.services else "all services"
    blocks: list[Block] = [
        HeaderBlock(text=clip(f"Promotion digest · {d.local(d.end, '%a %d %b %Y')}", 150)),
        ContextBlock(
            elements=[MarkdownTextObject(text=f"{d.local(d.start)} – {d.local(d.end)} ({d.config.timezone}) · {scope}")]
        ),
    ]
    totals = {m.environment: m for m in d.totals.promotions}
    for environment in d.environments:
        if environment in totals:
            blocks.append(_environment_section(environment, totals[environment]))
    if not totals:
        blocks.append(SectionBlock(text=MarkdownTextObject(text="No promotions in this period.")))
    blocks += [_dora_section(x) for x in d.totals.dora]
    missed = [
        f"• `{m.service}` {m.environment}: "
        + ", ".join(f"{t.metric} {t.value} (target {t.goal})" for t in m.targets() if t.met is False)
        for m in d.per_service.promotions
        if any(t.met is False for t in m.targets())
    ]
    if missed:
        blocks.append(_lines("Missed targets", missed[:MAX_SERVICE_LINES], len(missed)))
    blocks.append(DividerBlock())
    if d.slowest:
        blocks.append(
            _lines(
                "Slowest approvals",
                [
                    f"• `{a.promotion_id}` {a.service} `{a.tag}` → {a.environment}: {format_short(a.duration)}"
                    for a in d.slowest
                ],
            )
        )
    if d.failed.total:
        blocks.append(
            _lines(
                "Failed verifications",
                [
                    f"• {v.service} `{v.tag}` in {v.environment}, {d.local(v.finished_at)}" + _link(v.url)
                    for v in d.failed.items
                ],
                d.failed.total,
            )
        )
    if d.rollbacks.total:
        blocks.append(
            _lines(
                "Rollbacks",
                [
                    f"• `{r.promotion_id}` {r.service} {r.environment}: back to `{r.tag}`"
                    + (f" from `{r.replaces_tag}`" if r.replaces_tag else "")
                    + f" — {r.status}"
                    + (f" ({esc(r.reason)})" if r.reason else "")
                    for r in d.rollbacks.items
                ],
                d.rollbacks.total,
            )
        )
    if d.expedited.total:
        blocks.append(
            _lines(
                "Expedited promotions",
                [
                    f"• `{x.promotion_id}` {esc(x.service)} `{esc(x.tag)}` {esc(x.source_environment or '—')} → "
                    f"{esc(x.environment)} — {x.status} ({esc(x.reason or '')})"
                    for x in d.expedited.items
                ],
                d.expedited.total,
            )
        )
    seq, head = d.audit_head
    blocks.append(
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text=f"Audit chain head: event {seq:,}, hash `{head[:16]}` · chart: promotions per day and time to promote, "
                    f"last {len(d.series)} days"
                )
            ]
        )
    )
    return blocks


def digest_text(d: Digest) -> str:
    """The notification text (and the message for clients that cannot show blocks)."""
    totals = {m.environment: m for m in d.totals.promotions}
    parts = [
        f"{env}: {totals[env].completed} verified in {totals[env].weeks * 7:.0f} days, "
        f"success {percent(totals[env].success_rate)}"
        + (f", {totals[env].expedited} expedited" if totals[env].expedited else "")
        for env in d.environments
        if env in totals
    ]
    return f"Promotion digest {d.local(d.start)} – {d.local(d.end)}: " + ("; ".join(parts) or "no promotions")
