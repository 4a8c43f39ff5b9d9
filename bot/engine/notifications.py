"""Telling people: the card and its thread, channel alerts, direct messages.

Notifications go out after the state change has committed and never decide
anything: a Slack failure is logged, and the promotion carries on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bot.engine import records
from bot.engine.context import EngineContext
from bot.offload import off_loop
from bot.text import SLACK_GROUP, approver_mentions

log = logging.getLogger(__name__)


@dataclass
class _Redraw:
    """A card's redraw under way: whether another is due once it is done, and the notes to post after it."""

    again: bool = False
    notes: list[str] = field(default_factory=list)


class Notifications:
    def __init__(self, ctx: EngineContext):
        self.ctx = ctx
        self._redraws: dict[str, _Redraw] = {}  # promotion id -> its card's redraw under way (event loop only)

    async def announce(self, promotion_id: str, note: str | None) -> None:
        """Redraw the promotion's card and post ``note`` in its thread.

        One card's redraws coalesce. While one is under way, a later announcement leaves its note with it
        and asks it to draw once more when it is done, from what is recorded then: the card always ends
        up showing the latest state, the notes are posted in the order they were announced, and a burst
        of twenty approvals on one card costs a few redraws, not twenty (each reads the promotion and its
        evidence and renders tens of blocks, and Slack rate-limits ``chat.update``)."""
        under_way = self._redraws.get(promotion_id)
        if under_way is not None:
            under_way.again = True
            if note:
                under_way.notes.append(note)
            return
        redraw = self._redraws[promotion_id] = _Redraw(notes=[note] if note else [])
        try:
            while True:
                redraw.again = False
                view = await off_loop(records.view, self.ctx, promotion_id)
                if view is None:
                    return
                try:
                    await self.ctx.notifier.promotion_changed(view)
                except Exception:
                    log.exception("could not update the card for %s", promotion_id)
                while redraw.notes:
                    text = redraw.notes.pop(0)
                    try:
                        await self.ctx.notifier.note(view, text)
                    except Exception:
                        log.exception("could not post in the thread of %s", promotion_id)
                if not redraw.again:
                    return
        finally:
            del self._redraws[promotion_id]

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
