"""Bolt listeners: slash commands, buttons, the reject modal and App Home.

Every listener does only what must come before Slack's ack (Slack allows three seconds): a click's
decision (an approval, a revoke, a cancel, a rejection) is committed. It acks, and hands the rest to
``FollowUps``, which starts it once the event loop keeps up: the command's checks and answer (through its
response_url, ``Responder``, one kept-alive session), the card's redraw, a refusal's private message. The
Bolt app processes each request before it answers it (``process_before_response``), so the ack leaves as
soon as the listener returns.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.engine.service import PromotionService
from handlers import blocks as B
from handlers.app_home import home_view
from handlers.commands import CommandRouter, Reply
from handlers.followups import FollowUps
from handlers.slack_respond import Respond, Responder

log = logging.getLogger(__name__)


async def _say_privately(respond: Respond, text: str) -> None:
    await respond(
        text=text, blocks=[b.to_dict() for b in B.message(text)], response_type="ephemeral", replace_original=False
    )


async def _in_order(told: list[Callable[[], Awaitable[None]]]) -> None:
    """What a decision handed over to tell people (its card, thread and DMs), one after the other."""
    for tell in told:
        await tell()


def register(
    app: AsyncApp, service: PromotionService, router: CommandRouter, responder: Responder, followups: FollowUps
) -> None:
    """Attach promobot's listeners to a Bolt app; they answer through ``responder``, after the ack."""

    def answer(body: dict, command: Callable[[str, str], Awaitable[Reply]]) -> None:
        async def work() -> None:
            reply = await command(body["user_id"], body.get("text", ""))
            await responder.to(body)(**reply.payload())

        followups.start(body.get("command", "a command"), work)

    @app.command("/promote")
    async def promote(ack: Any, body: dict) -> None:
        await ack()
        answer(body, router.promote)

    @app.command("/status")
    async def status(ack: Any, body: dict) -> None:
        await ack()
        answer(body, router.status)

    @app.command("/rollback")
    async def rollback(ack: Any, body: dict) -> None:
        await ack()
        answer(body, router.rollback)

    # Buttons have no lane (``handlers.commands.ANSWERS_AT_ONCE``): a card's redraws coalesce only while its
    # announcements overlap, and with clicks worked on four at a time they did not (545 redraws for 500
    # clicks, twice the interpreter's time per click).
    # A click's decision (an approval, a revoke, a cancel, a rejection) is committed before the ack, so
    # Slack's order of the clicks is the order they take effect (a revoke acked before someone's last
    # approval is never counted by it); what tells people about it follows, in the order it was told.
    @app.action(B.APPROVE)
    async def approve(ack: Any, body: dict, action: dict) -> None:
        # Recorded before the ack: a crash after Slack heard "ok" must not lose the approval.
        user = body["user"]["id"]
        told: list[Callable[[], Awaitable[None]]] = []
        recorded = await service.record_approval(action["value"], user, later=told.append)
        await ack()

        async def work() -> None:
            await _in_order(told)
            if not recorded.changed:
                await _say_privately(responder.to(body), recorded.message)
                return
            result = await service.complete_approval(action["value"], user, recorded)
            if not result.changed:
                await _say_privately(responder.to(body), result.message)

        followups.start("an approval", work)

    @app.action(B.CANCEL)
    async def cancel(ack: Any, body: dict, action: dict) -> None:
        told: list[Callable[[], Awaitable[None]]] = []
        result = await service.cancel(action["value"], body["user"]["id"], later=told.append)
        await ack()

        async def work() -> None:
            await _in_order(told)
            if not result.changed:
                await _say_privately(responder.to(body), result.message)

        followups.start("a cancel", work)

    @app.action(B.REVOKE)
    async def revoke(ack: Any, body: dict, action: dict) -> None:
        told: list[Callable[[], Awaitable[None]]] = []
        result = await service.revoke_approval(action["value"], body["user"]["id"], later=told.append)
        await ack()

        async def work() -> None:
            await _in_order(told)  # the card and the thread, then the private answer
            await _say_privately(responder.to(body), result.message)

        followups.start("a revoke", work)

    @app.event("app_home_opened")
    async def home(event: dict, client: Any) -> None:
        if event.get("tab", "home") != "home":
            return

        async def work() -> None:
            await client.views_publish(user_id=event["user"], view=await home_view(service, event["user"]))

        followups.start("App Home", work)

    @app.action(B.REJECT)
    async def reject(ack: Any, body: dict, action: dict, client: Any) -> None:
        await ack()

        async def work() -> None:
            p = await service.rejectable(action["value"], body["user"]["id"])
            if isinstance(p, str):
                await _say_privately(responder.to(body), p)
                return
            await client.views_open(
                trigger_id=body["trigger_id"], view=B.reject_modal(p.id, p.service, p.tag, p.target_environment)
            )

        # at once: the modal must open within the three seconds the click's trigger id lives
        followups.start("a reject", work, now=True)

    @app.view(B.REJECT_VIEW)
    async def reject_reason(ack: Any, body: dict, view: dict, client: Any) -> None:
        reason = (view["state"]["values"].get("reason", {}).get("value", {}).get("value") or "").strip()
        if len(reason) < 3:
            await ack(response_action="errors", errors={"reason": "Say why, so the requester knows what to fix."})
            return
        user = body["user"]["id"]
        told: list[Callable[[], Awaitable[None]]] = []
        result = await service.reject(view["private_metadata"], user, reason, later=told.append)
        await ack()

        async def work() -> None:
            await _in_order(told)
            if not result.changed:
                await client.chat_postMessage(channel=user, text=result.message)

        followups.start("a rejection", work)
