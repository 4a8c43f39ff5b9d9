"""Faults around approval and dispatch, against the real server: GitHub failing or slow at the wrong moment,
an approver changing their mind, a click on the deadline. None of them may lose, double or sneak a dispatch."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.harness import (
    CONFIG,
    all_text,
    audit_actions,
    card_id,
    card_update,
    header_text,
    in_thread,
    production_dispatches,
    promotion,
    request_card,
    seed,
)

TWO_APPROVALS = CONFIG.replace("required_approvals: 1", "required_approvals: 2")


async def test_github_failing_while_approval_completes_keeps_it_approved_until_it_answers(harness, monkeypatch):
    h, gh = harness, harness.github
    monkeypatch.setattr(h.bot.service.outbox.delivery, "backoff_base", 0.3)
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    pid = card_id(card)
    gh.fail_next(count=10_000, status=502, path_contains="/compare/")  # "source commit reachable" cannot be asked

    await h.user("U0LEAD").click(card, "promotion.approve")
    waiting = await card_update(h, card, lambda u: "Waiting:" in all_text(u))
    assert "Approved, dispatching" in header_text(waiting)
    assert "could not verify" in all_text(waiting) and "next try at" in all_text(waiting)
    note = await in_thread(h, card, "Waiting for GitHub")
    assert "Still approved" in note and "GitHub answered 502" in note
    await asyncio.sleep(1.5)  # several tries while GitHub is down: nothing voided, nothing sent
    assert promotion(h, pid).status == "approved"
    assert production_dispatches(h) == []

    gh.clear_failures()  # GitHub recovers
    dispatch = (await h.wait(lambda s: production_dispatches(h), timeout=20))[0]
    assert dispatch["inputs"]["promotion_id"] == pid
    await card_update(h, card, lambda u: "Deploying" in header_text(u) and "Waiting:" not in all_text(u))
    await asyncio.sleep(0.5)
    assert len(production_dispatches(h)) == 1
    assert ("promotion.voided", "promobot") not in audit_actions(h, promotion_id=pid)


async def test_evidence_that_never_answers_voids_the_promotion_when_its_approval_expires(harness, monkeypatch):
    h, gh = harness, harness.github
    monkeypatch.setattr(h.bot.service.outbox.delivery, "backoff_base", 0.3)
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    pid = card_id(card)
    gh.fail_next(count=10_000, status=502, path_contains="/compare/")
    await h.user("U0LEAD").click(card, "promotion.approve")
    await in_thread(h, card, "Waiting for GitHub")
    h.clock.fixed = promotion(h, pid).expires_at + timedelta(seconds=1)  # four hours of GitHub being down
    voided = await card_update(h, card, lambda u: "Voided" in header_text(u))
    assert "could not verify" in all_text(voided)
    note = await in_thread(h, card, "could not be checked before the approval expired")
    assert "Request it again once GitHub answers" in note
    assert production_dispatches(h) == []


@pytest.mark.parametrize("settings_overrides", [{"promobot_run_listing_lag": 35.0}])
async def test_a_dispatch_accepted_then_answered_502_with_a_slow_runs_list_runs_once(harness):
    h, gh = harness, harness.github
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    pid = card_id(card)
    gh.accept_then_fail(1)  # GitHub starts the run, then its answer is lost in a 502
    gh.listing_lag = 6.0  # and lists the new run six seconds later
    await h.user("U0LEAD").click(card, "promotion.approve")
    await card_update(h, card, lambda u: "Deploying" in header_text(u), timeout=30)
    await asyncio.sleep(1.0)
    dispatches = production_dispatches(h)
    assert len(dispatches) == 1, dispatches
    runs = [r for r in gh.runs("acme/api-gateway") if pid in r["display_title"]]
    assert len(runs) == 1
    assert promotion(h, pid).pipeline_run_id == str(runs[0]["id"])
    # the retry looked for the run over the listing window instead of sending again
    looks = [r for r in gh.requests() if r["method"] == "GET" and r["path"].endswith("/runs")]
    assert len(looks) >= 2


@pytest.mark.parametrize("config_text", [TWO_APPROVALS])
async def test_an_approver_who_approved_and_then_rejects_rejects(harness):
    h = harness
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    pid = card_id(card)
    rm1 = h.user("U0RM1")
    await rm1.click(card, "promotion.approve")
    await card_update(h, card, lambda u: "1 of 2" in all_text(u))

    await rm1.click(card, "promotion.reject")
    view = (await h.wait(lambda s: s.calls("views.open")))[0]["params"]["view"]
    resp = await rm1.submit_view(
        view, {"reason": {"value": {"type": "plain_text_input", "value": "the canary is red"}}}
    )
    assert resp.status == 200
    rejected = await card_update(h, card, lambda u: "Rejected" in header_text(u))
    assert "<@U0RM1>" in all_text(rejected)
    assert promotion(h, pid).status == "rejected"
    assert ("promotion.rejected", "U0RM1") in audit_actions(h, promotion_id=pid)

    # the next approval changes nothing
    lead = h.user("U0LEAD")
    await lead.click(card, "promotion.approve")
    assert "rejected" in (await h.wait(lambda s: lead.replies()))[0]["text"]
    await asyncio.sleep(0.5)
    assert production_dispatches(h) == []


@pytest.mark.parametrize("config_text", [TWO_APPROVALS])
async def test_reject_racing_the_last_approval_never_dispatches_a_rejected_promotion(harness):
    h = harness
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    pid = card_id(card)
    rm1 = h.user("U0RM1")
    await rm1.click(card, "promotion.approve")
    await card_update(h, card, lambda u: "1 of 2" in all_text(u))
    await rm1.click(card, "promotion.reject")
    view = (await h.wait(lambda s: s.calls("views.open")))[0]["params"]["view"]
    reason = {"reason": {"value": {"type": "plain_text_input", "value": "the canary is red"}}}
    # RM1's rejection and LEAD's approval arrive at the same moment
    await asyncio.gather(rm1.submit_view(view, reason), h.user("U0LEAD").click(card, "promotion.approve"))
    await asyncio.sleep(1.5)
    final = promotion(h, pid).status
    if final == "rejected":
        assert production_dispatches(h) == []
    else:  # LEAD's approval completed first with both approvals: RM1's rejection came too late and says so
        assert final in ("dispatched", "deployed") and len(production_dispatches(h)) == 1
        assert any("already approved" in m["text"] for m in h.slack.messages("U0RM1"))


@pytest.mark.parametrize("config_text", [CONFIG.replace("approval_ttl: 4h", "approval_ttl: 4s")])
@pytest.mark.parametrize("settings_overrides", [{"promobot_outbox_interval": 60.0}])  # no expiry pass meanwhile
async def test_an_approval_clicked_before_the_deadline_does_not_complete_after_it(harness):
    h, gh = harness, harness.github
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    pid = card_id(card)
    expires_at = promotion(h, pid).expires_at
    gh.delay_next(5.0, "/compare/")  # the approval's re-check of the gates outlasts the deadline
    lead = h.user("U0LEAD")
    await lead.click(card, "promotion.approve")
    told = (await h.wait(lambda s: lead.replies(), timeout=15))[0]["text"]
    assert "expired at" in told and "before its approval was complete" in told
    p = promotion(h, pid)
    assert p.status == "expired" and p.approved_at is None
    assert p.completed_at >= expires_at
    await asyncio.sleep(0.5)
    assert production_dispatches(h) == []
    assert ("promotion.approved", "U0LEAD") not in audit_actions(h, promotion_id=pid)
