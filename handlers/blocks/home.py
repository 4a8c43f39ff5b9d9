"""App Home: what waits for my approval, my requests, then every service × environment."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import Block, ContextBlock, DividerBlock, HeaderBlock, PlainTextObject
from slack_sdk.models.views import View

from bot.clock import format_when
from bot.engine.roles import PromotionView
from bot.engine.status import OverviewRow
from bot.text import esc, mention
from handlers.blocks.common import HOME_BLOCKS, STATUS_ICON, approvals_text, chunks, md, section, short_tag
from handlers.blocks.status import OVERVIEW_LEGEND, grid, out_of_band_line
from storage.statuses import PromotionKind
from storage.statuses import PromotionStatus as S


def _home_entry(view: PromotionView) -> str:
    noun = "Rollback" if view.kind == PromotionKind.ROLLBACK else "Promotion"
    if view.expedited:
        noun = "EXPEDITED promotion"
    where = f" · card in <#{view.channel}>" if view.channel else ""
    return (
        f"*{noun}: {esc(view.service)}* `{esc(view.tag)}` → *{esc(view.target_environment)}* "
        f"(`{view.id}`)\nrequested by {mention(view.requested_by)} {format_when(view.requested_at)} · "
        f"{approvals_text(view, '; ')} · expires {format_when(view.expires_at)}{where}"
    )


def home(
    waiting: Sequence[PromotionView], mine: Sequence[PromotionView], rows: Sequence[OverviewRow], now: datetime
) -> View:
    """The Home tab: what waits for my approval first, then my requests, then every service."""
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text="Waiting for my approval"))]
    if waiting:
        blocks += [section(_home_entry(v)) for v in waiting[:20]]
        if len(waiting) > 20:
            blocks.append(ContextBlock(elements=[md(f"…and {len(waiting) - 20} more.")]))
    else:
        blocks.append(section("Nothing waits for you. :tada:"))
    blocks += [DividerBlock(), HeaderBlock(text=PlainTextObject(text="My requests"))]
    if mine:
        lines = [
            f"{STATUS_ICON[S(v.status)]} `{v.id}` {esc(v.service)} `{esc(short_tag(v.tag))}` → "
            f"{esc(v.target_environment)}: {S(v.status).label.lower()} · {format_when(v.requested_at)}"
            for v in mine
        ]
        blocks += [section(c) for c in chunks(lines)]
    else:
        blocks.append(section("You have not requested anything yet. Try `/promote help`."))
    flagged = [(r.service, c.out_of_band) for r in rows for c in r.cells if c.out_of_band]
    if flagged:
        blocks += [DividerBlock(), HeaderBlock(text=PlainTextObject(text="Out-of-band reports"))]
        lines = [
            f"*{esc(service)}* in *{esc(flag.environment)}*: {out_of_band_line(flag, now)}" for service, flag in flagged
        ]
        blocks += [section(c) for c in chunks(lines[:20])]
    blocks += [
        DividerBlock(),
        HeaderBlock(text=PlainTextObject(text="Every service")),
        ContextBlock(elements=[md(f"{OVERVIEW_LEGEND} · as of {format_when(now)}")]),
    ]
    blocks += grid(rows, HOME_BLOCKS - len(blocks)) if rows else [section("No services configured.")]
    return View(type="home", blocks=blocks)
