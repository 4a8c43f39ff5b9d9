"""Telling people: the card and its thread, channel alerts, direct messages.

Notifications go out after the state change has committed and never decide
anything: a Slack failure is logged, and the promotion carries on.
"""

from __future__ import annotations

import logging

from bot.engine import records
from bot.engine.context import EngineContext
from bot.text import SLACK_GROUP, approver_mentions

log = logging.getLogger(__name__)


class Notifications:
    def __init__(self, ctx: EngineContext):
        self.ctx = ctx

    async def announce(self, promotion_id: str, note: str | None) -> None:
        """Redraw the promotion's card and post ``note`` in its thread."""
        view = records.view(self.ctx, promotion_id)
        if view is None:
            return
        try:
            await self.ctx.notifier.promotion_changed(view, note)
        except Exception:
            log.exception("could not update the card for %s", promotion_id)

    async def alert(self, channel: str, text: str) -> None:
        try:
            await self.ctx.notifier.alert(channel, text)
        except Exception:
            log.exception("could not post an alert to %s", channel)

    async def tell(self, user: str, text: str) -> None:
        try:
            await self.ctx.notifier.tell(user, text)
        except Exception:
            log.exception("could not message %s", user)

    async def approver_users(self, ids: list[str]) -> set[str]:
        """The users behind approver ids (user groups expanded); the plain user ids if Slack cannot say."""
        try:
            return await self.ctx.directory.expand(ids)
        except Exception:
            log.warning("could not resolve approver groups %s", ids, exc_info=True)
            return {i for i in ids if not SLACK_GROUP.match(i)}

    async def alert_approvers(self, environment: str, channel: str, text: str) -> None:
        """The channel, with the environment's approvers mentioned, and a direct message to each approver."""
        approvers = self.ctx.config.environment(environment).approvers
        await self.alert(channel, f"{text} {approver_mentions(approvers, ' ')}".strip())
        for user in sorted(await self.approver_users(approvers)):
            await self.tell(user, text)
