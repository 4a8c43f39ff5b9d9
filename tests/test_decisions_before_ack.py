"""A click's decision is committed before Slack hears "ok", and only what tells people about it waits for
the follow-ups: so clicks take effect in the order Slack acknowledged them (a revoke acked before someone's
last approval is never counted by it). A server that stops while a click is still being recorded answers
that click before it closes its Slack sessions."""

from __future__ import annotations

import asyncio

import pytest

from tests.harness import (
    CONFIG,
    all_text,
    audit_actions,
    card_id,
    card_update,
    in_thread,
    promotion,
    request_card,
    seed,
)

TWO = CONFIG.replace("required_approvals: 1", "required_approvals: 2")


async def pending_card(h) -> tuple[dict, str]:
    """A production promotion waiting for approval: its card, and its id."""
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    return card, card_id(card)


def hold_follow_ups(h) -> None:
    """From now on nothing a listener leaves for after its ack starts until the follow-ups are drained (as
    under a burst that keeps the event loop busy)."""
    h.bot.followups.quiet = 0.0
    h.bot.followups.max_wait = 60.0


@pytest.mark.parametrize("config_text", [TWO])
async def test_a_revoke_and_a_cancel_have_taken_effect_when_slack_hears_ok(harness):
    h = harness
    card, pid = await pending_card(h)
    rm1 = h.user("U0RM1")
    assert (await rm1.click(card, "promotion.approve")).status == 200
    one = await card_update(h, card, lambda u: "1 of 2" in all_text(u))
    hold_follow_ups(h)

    assert (await rm1.click(one, "promotion.revoke")).status == 200
    assert ("promotion.approval_revoked", "U0RM1") in audit_actions(h, promotion_id=pid)
    assert (await h.user("U0DEV").click(card, "promotion.cancel")).status == 200
    assert promotion(h, pid).status == "cancelled"
    assert not rm1.replies()  # what tells people waits for the follow-ups

    assert await h.bot.followups.drain(timeout=10)
    assert "is revoked: 0 of 2" in (await h.wait(lambda s: rm1.replies()))[0]["text"]
    await in_thread(h, card, "<@U0RM1> revoked their approval (0 of 2)")
    await in_thread(h, card, "Cancelled by <@U0DEV>.")


async def test_a_rejection_has_taken_effect_when_slack_hears_ok(harness):
    h = harness
    card, pid = await pending_card(h)
    lead = h.user("U0LEAD")
    hold_follow_ups(h)
    await lead.click(card, "promotion.reject")  # its modal opens at once: the trigger id lives three seconds
    view = (await h.wait(lambda s: s.calls("views.open")))[0]["params"]["view"]

    resp = await lead.submit_view(view, {"reason": {"value": {"type": "plain_text_input", "value": "not today"}}})
    assert resp.status == 200
    assert promotion(h, pid).status == "rejected"

    assert await h.bot.followups.drain(timeout=10)
    await in_thread(h, card, "not today")
    await h.wait(lambda s: [m for m in s.messages("U0DEV") if "rejected" in m["text"]])


async def test_a_server_stopping_while_a_click_is_recorded_completes_it_before_it_stops(server):
    h, runner = server
    card, pid = await pending_card(h)
    recording = asyncio.Event()
    record = h.bot.service.record_approval

    async def slow_record(promotion_id: str, user: str, **kwargs):
        recording.set()
        await asyncio.sleep(0.3)  # a write that takes a while: the server is told to stop meanwhile
        return await record(promotion_id, user, **kwargs)

    h.bot.service.record_approval = slow_record
    h.github.delay_next(1.5, "/repos/acme/api-gateway", count=20)  # the approval's gates are read again, slowly
    click = asyncio.ensure_future(h.user("U0RM1").click(card, "promotion.approve"))
    await recording.wait()
    await runner.cleanup()

    assert (await click).status == 200
    # acked while the server was stopping, and completed before it stopped: approved (and perhaps dispatched)
    assert promotion(h, pid).status in ("approved", "dispatched"), promotion(h, pid).status
    assert ("promotion.approved", "U0RM1") in audit_actions(h, promotion_id=pid)
    assert h.bot.followups.pending == 0
