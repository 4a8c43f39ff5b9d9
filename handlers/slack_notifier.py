"""Posting promotions to Slack: the card in the service channel, its thread, and DMs."""

from __future__ import annotations

import logging
from typing import Any

from bot.engine.roles import PromotionView
from bot.offload import off_loop
from bot.text import esc
from handlers import blocks as B
from storage.statuses import PromotionKind

log = logging.getLogger(__name__)
MAX_DIRECT_MESSAGES = 25


def _card(view: PromotionView) -> tuple[str, list[dict]]:
    """The card's fallback text and its blocks, rendered (on the readers' threads: a card is tens of blocks)."""
    return B.card_text(view), [b.to_dict() for b in B.approval_card(view)]


class SlackNotifier:
    def __init__(self, client: Any):
        self.client = client

    async def promotion_requested(
        self, view: PromotionView, approver_users: list[str]
    ) -> tuple[str | None, str | None]:
        text, blocks = await off_loop(_card, view)
        resp = await self.client.chat_postMessage(channel=view.channel, text=text, blocks=blocks)
        channel, ts = resp.get("channel"), resp.get("ts")
        link = ""
        try:
            link = (await self.client.chat_getPermalink(channel=channel, message_ts=ts)).get("permalink", "")
        except Exception:
            log.info("no permalink for %s", view.id)
        where = f"<{link}|the card in <#{channel}>>" if link else f"the card in <#{channel}>"
        # promobot itself asks for automatic rollbacks: say why, and that it is urgent
        asker = (
            f":rotating_light: promobot ({esc(view.reason or 'automatic')})"
            if view.requested_by == "promobot"
            else f"<@{view.requested_by}>"
        )
        what = ("the rollback of " if view.kind == PromotionKind.ROLLBACK else "") + esc(view.service)
        for user in [u for u in approver_users if u != view.requested_by][:MAX_DIRECT_MESSAGES]:
            text = (
                f"{asker} asks you to approve {what} `{esc(view.tag)}` → "
                f"{esc(view.target_environment)} (`{view.id}`). Decide on {where}."
            )
            try:
                await self.client.chat_postMessage(
                    channel=user, text=text, blocks=[b.to_dict() for b in B.message(text)]
                )
            except Exception:
                log.warning("could not DM approver %s about %s", user, view.id)
        return channel, ts

    async def promotion_changed(self, view: PromotionView, note: str | None = None) -> None:
        if view.channel and view.message_ts:
            text, blocks = await off_loop(_card, view)
            await self.client.chat_update(channel=view.channel, ts=view.message_ts, text=text, blocks=blocks)
        if note:
            await self.note(view, note)

    async def note(self, view: PromotionView, note: str) -> None:
        if view.channel and view.message_ts:
            await self.client.chat_postMessage(channel=view.channel, thread_ts=view.message_ts, text=note)
        elif view.channel:
            await self.alert(view.channel, f"`{view.id}`: {note}")

    async def alert(self, channel: str, text: str) -> None:
        await self.client.chat_postMessage(channel=channel, text=text, blocks=[b.to_dict() for b in B.message(text)])

    async def tell(self, user: str, text: str) -> None:
        await self.client.chat_postMessage(channel=user, text=text)
