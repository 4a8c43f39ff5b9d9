"""Telling people: the card and its thread, channel alerts, direct messages.

Notifications go out after the state change has committed and never decide
anything: a Slack failure is logged, and the promotion carries on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from bot.engine import records
from bot.engine.context import EngineContext
from bot.offload import off_loop
from bot.text import SLACK_GROUP, approver_mentions

log = logging.getLogger(__name__)

# A card redrawn again for announcements that came during its redraw waits until this long after that
# redraw began, gathering what comes meanwhile: a redraw reads the promotion and its evidence and renders
# tens of blocks, holding the interpreter's lock that acknowledgements wait on, and Slack takes about one
# message a second per channel and fifty chat.update calls a minute. One card's pace never holds up another.
REDRAW_EVERY = 0.5  # seconds


NOTE_CHARS = 2900  # notes joined into one message up to this length (a section block takes 3,000 characters)


def _messages(notes: list[str]) -> list[str]:
    """``notes`` joined a line each into as few messages as hold them, in order; a longer note goes alone."""
    messages: list[str] = []
    for note in notes:
        if messages and len(messages[-1]) + 1 + len(note) <= NOTE_CHARS:
            messages[-1] += "\n" + note
        else:
            messages.append(note)
    return messages


def _serve(announcements: list[tuple[str | None, asyncio.Future[None] | None]]) -> None:
    for _, served in announcements:
        if served is not None and not served.done():
            served.set_result(None)


@dataclass
class _Redraw:
    """A card's redraw under way, and the announcements that came meanwhile: each note to post after the
    next redraw, and the future its caller waits on (None for the announcement that started the redraw)."""

    waiting: list[tuple[str | None, asyncio.Future[None] | None]] = field(default_factory=list)


class Notifications:
    def __init__(self, ctx: EngineContext):
        self.ctx = ctx
        self._redraws: dict[str, _Redraw] = {}  # promotion id -> its card's redraw under way (event loop only)

    async def announce(self, promotion_id: str, note: str | None) -> None:
        """Redraw the promotion's card and post ``note`` in its thread; returns once both are done.

        One card's redraws coalesce. While one is under way, later announcements wait for it and are all
        served by one more redraw, which reads what is recorded then (after each of them was called):
        the card always ends up showing the latest state, the notes are posted in the order they were
        announced, and a burst of twenty approvals on one card costs a few redraws, not twenty (each reads
        the promotion and its evidence and renders tens of blocks, and Slack rate-limits ``chat.update``).
        The redraw for announcements that came meanwhile starts ``REDRAW_EVERY`` after the one before."""
        under_way = self._redraws.get(promotion_id)
        if under_way is not None:
            served = asyncio.get_running_loop().create_future()
            under_way.waiting.append((note, served))
            await served
            return
        redraw = self._redraws[promotion_id] = _Redraw([(note, None)])
        taken: list[tuple[str | None, asyncio.Future[None] | None]] = []
        loop = asyncio.get_running_loop()
        try:
            while redraw.waiting:
                began = loop.time()
                taken, redraw.waiting = redraw.waiting, []
                await self._draw(promotion_id, [text for text, _ in taken if text])
                _serve(taken)
                taken = []
                if redraw.waiting:
                    await asyncio.sleep(max(0.0, began + REDRAW_EVERY - loop.time()))
        finally:
            del self._redraws[promotion_id]
            _serve(taken + redraw.waiting)  # never leave an announcement waiting for a redraw that is gone

    async def _draw(self, promotion_id: str, notes: list[str]) -> None:
        view = await off_loop(records.view, self.ctx, promotion_id)
        if view is None:
            return
        try:
            await self.ctx.notifier.promotion_changed(view)
        except Exception:
            log.exception("could not update the card for %s", promotion_id)
        # the notes one redraw serves, a line each in the order announced: one message, where a burst of
        # approvals would be a burst of messages (Slack takes about one a second per channel)
        for text in _messages(notes):
            try:
                await self.ctx.notifier.note(view, text)
            except Exception:
                log.exception("could not post in the thread of %s", promotion_id)

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
