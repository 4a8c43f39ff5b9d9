"""The first promotion to production, end to end: pipeline events → /promote → card →
approval → workflow_dispatch → deployment → verification → audit record.

The real Bolt app serves real HTTP; Slack and GitHub are the local stand-ins.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import Session, select

from storage.models import AuditEvent
from tests.harness import (
    TAG,
    all_text,
    deployed,
    fixture_json,
    header_text,
    production_dispatches,
    request_card,
    seed,
    sign,
    valid_record,
    verified,
)


async def test_promote_staging_artifact_to_production_with_one_approval(harness):
    h = harness
    build = await seed(h)
    dev = await request_card(h)
    assert "waiting for 1 approval" in dev.replies()[0]["text"]
    assert dev.replies()[0]["response_type"] == "ephemeral"

    card = h.cards()[-1]
    assert "api-gateway → production" in header_text(card)
    assert "Waiting for approval" in header_text(card)
    text = all_text(card)
    for expected in (
        TAG,
        build["digest"][:19],
        "staging → production",
        "<@U0DEV>",
        "0 of 1",
        "Immutable tag",
        "Previous environment verified",
        "No skipped environment",
        "Source commit reachable",
        "Vulnerabilities",
        "SBOM present",
        "Soak time",
    ):
        assert expected in text, expected
    buttons = [el["action_id"] for b in card["blocks"] if b["type"] == "actions" for el in b["elements"]]
    assert buttons == ["promotion.approve", "promotion.reject", "promotion.cancel"]
    # approvers are told: the user and the members of the user group, never the requester
    dms = {m["channel"] for m in h.slack.messages() if m["channel"].startswith("U")}
    assert dms == {"U0LEAD", "U0RM1", "U0RM2"}

    # the requester cannot approve their own promotion; a stranger cannot approve at all
    await dev.click(card, "promotion.approve")
    await h.wait(lambda s: dev.replies())
    assert "cannot approve" in dev.replies()[0]["text"] and dev.replies()[0]["response_type"] == "ephemeral"
    stranger = h.user("U0STRANGER")
    await stranger.click(card, "promotion.approve")
    await h.wait(lambda s: stranger.replies())
    assert "not an approver for production" in stranger.replies()[0]["text"]
    assert production_dispatches(h) == []

    # a member of the approver group approves: the workflow is dispatched once, with the contract's inputs
    approver = h.user("U0RM1")
    await approver.click(card, "promotion.approve")
    dispatch = (await h.wait(lambda s: production_dispatches(h)))[0]
    promotion_id = dispatch["inputs"]["promotion_id"]
    assert dispatch["repo"] == "acme/api-gateway" and dispatch["workflow"] == "deploy.yml"
    assert dispatch["ref"] == "main"
    assert dispatch["inputs"] == {
        "environment": "production",
        "image_tag": TAG,
        "image_digest": build["digest"],
        "promotion_id": promotion_id,
    }
    await h.wait(lambda s: any("Deploying" in header_text(u) for u in s.updates("C0DEPLOYS")))
    run_id = str(dispatch["run_id"])
    thread = [m["text"] for m in h.slack.messages("C0DEPLOYS") if m.get("thread_ts") == card["ts"]]
    assert any("Approved by <@U0RM1>" in t for t in thread)
    await h.wait(
        lambda s: any(f"run {run_id}" in m["text"] for m in s.messages("C0DEPLOYS") if m.get("thread_ts") == card["ts"])
    )

    # a second approver's click changes nothing and says who approved
    late = h.user("U0LEAD")
    await late.click(card, "promotion.approve")
    await h.wait(lambda s: late.replies())
    assert "already approved by <@U0RM1>" in late.replies()[0]["text"]
    await asyncio.sleep(0.5)
    assert len(production_dispatches(h)) == 1

    # the deploy workflow reports back; the card follows
    assert (await h.event(deployed("api-gateway", TAG, "production", run_id=run_id)))[0] == 202
    assert (await h.event(verified("api-gateway", TAG, "production", checks={"smoke": "passed", "slo": "passed"})))[
        0
    ] == 202
    await h.wait(lambda s: any("Verified" in header_text(u) for u in s.updates("C0DEPLOYS")))

    status, record = await h.get(f"/api/v1/promotions/{promotion_id}")
    assert status == 200
    valid_record(record)  # the published JSON Schema
    assert record["promotion_id"] == promotion_id and record["status"] == "SUCCESS"
    assert record["artifact"] == {
        "name": "api-gateway",
        "tag": TAG,
        "digest": build["digest"],
        "source_commit": build["commit_sha"],
    }
    assert record["source_environment"] == "staging" and record["target_environment"] == "production"
    assert record["approver"] == "U0RM1" and record["pipeline_run_id"] == run_id
    assert record["promotion_requested_at"] and record["promotion_approved_at"] and record["promotion_completed_at"]
    assert record["verification_results"] == {"staging": "PASSED", "production": "PASSED"}
    assert record["verifications"][0]["checks"] == {"smoke": "passed", "slo": "passed"}

    with Session(h.bot.engine) as s:
        actions = [
            (e.action, e.actor)
            for e in s.exec(select(AuditEvent).where(AuditEvent.promotion_id == promotion_id).order_by(AuditEvent.seq))
        ]
    assert actions == [
        ("promotion.requested", "U0DEV"),
        ("promotion.approval", "U0RM1"),
        ("promotion.approved", "U0RM1"),
        ("dispatch.sent", "promobot"),
        ("deployment.finished", "pipeline"),
        ("verification.finished", "pipeline"),
    ]


async def test_reject_asks_for_a_reason_and_escapes_it(harness):
    h = harness
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    lead = h.user("U0LEAD")
    await lead.click(card, "promotion.reject")
    opened = await h.wait(lambda s: s.calls("views.open"))
    view = opened[0]["params"]["view"]
    assert view["callback_id"] == "promotion.reject_reason"
    # an empty reason is refused in the modal itself
    resp = await lead.submit_view(view, {"reason": {"value": {"type": "plain_text_input", "value": " "}}})
    assert resp.status == 200 and "errors" in await resp.json()
    await lead.submit_view(
        view, {"reason": {"value": {"type": "plain_text_input", "value": "<!channel> error budget spent"}}}
    )
    update = await h.wait(lambda s: [u for u in s.updates("C0DEPLOYS") if "Rejected" in header_text(u)])
    assert "&lt;!channel&gt; error budget spent" in all_text(update[-1])
    assert "<!channel>" not in all_text(update[-1])
    dm = await h.wait(lambda s: [m for m in s.messages("U0DEV") if "rejected" in m["text"]])
    assert "&lt;!channel&gt;" in dm[0]["text"]
    assert production_dispatches(h) == []


async def test_refusals_name_the_gate_and_evidence(harness):
    h = harness
    await seed(h, envs=("dev",))  # verified in dev only: production would skip staging
    dev = await request_card(h, text=f"api-gateway {TAG} to production")
    reply = dev.replies()[0]
    text = all_text(reply)
    assert "Cannot promote *api-gateway* `7a3f9c2` to *production*" in text
    assert "Previous environment verified" in text and "never deployed successfully to staging" in text
    assert "No skipped environment" in text and "cannot skip staging" in text
    assert "/promote api-gateway 7a3f9c2 to staging" in text  # the next step
    assert h.cards() == []

    for words, expected in (
        ("api-gatewy 7a3f9c2", "did you mean `api-gateway`"),
        ("api-gateway latest to production", "`latest` is a mutable tag"),
        ("api-gateway 7a3f9c2 to prod", "did you mean `production`"),
        ("api-gateway 7a3f9c2 --force", "Unknown option `--force`"),
    ):
        user = h.user("U0DEV")
        await user.command("/promote", words)
        await h.wait(lambda s, user=user: user.replies())
        assert expected in all_text(user.replies()[0]), (words, all_text(user.replies()[0]))


async def test_check_only_shows_every_gate_and_requests_nothing(harness):
    h = harness
    await seed(h)
    dev = await request_card(h, text=f"api-gateway {TAG} --check")
    text = all_text(dev.replies()[0])
    assert "is eligible (check only; nothing was requested)" in text
    assert text.count(":white_check_mark:") >= 10
    assert h.cards() == []
    status, report = await h.get(f"/api/v1/eligibility?service=api-gateway&tag={TAG}&environment=production")
    assert status == 200 and report["eligible"] is True
    assert {g["gate"] for g in report["gates"]} >= {
        "immutable_tag",
        "previous_environment_verified",
        "no_skipped_environment",
        "vulnerabilities",
    }


async def test_critical_vulnerability_blocks_with_cve_evidence(harness):
    h = harness
    await seed(h, scan="trivy/trivy-alpine-3.9-high-critical.json")
    dev = await request_card(h)
    text = all_text(dev.replies()[0])
    assert "Vulnerabilities" in text and "CVE-2019-14697" in text and "1.1.20-r5" in text
    assert h.cards() == []


async def test_unsigned_or_stale_slack_requests_are_refused(harness):
    h = harness
    body = "command=%2Fpromote&text=api-gateway&user_id=U0DEV&channel_id=C0DEPLOYS&response_url=http%3A%2F%2Fx"
    bad = await h.post_slack(body, headers={**sign(body), "X-Slack-Signature": "v0=" + "0" * 64})
    assert bad.status == 401
    stale = await h.post_slack(body, headers=sign(body, timestamp=1_600_000_000))
    assert stale.status == 401
    assert h.slack.responses() == []


async def test_evidence_changed_before_approval_voids_the_request(harness):
    h = harness
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    # a new scan of the same artifact finds a critical vulnerability
    status, _ = await h.event(
        {
            "type": "scan.finished",
            "service": "api-gateway",
            "tag": TAG,
            "scanner": "trivy",
            "report": fixture_json("trivy/trivy-alpine-3.9-high-critical.json"),
        }
    )
    assert status == 202
    lead = h.user("U0LEAD")
    await lead.click(card, "promotion.approve")
    update = await h.wait(lambda s: [u for u in s.updates("C0DEPLOYS") if "Voided" in header_text(u)])
    assert "CVE-2019-14697" in all_text(update[-1])
    assert not any(b["type"] == "actions" for b in update[-1]["blocks"])
    await asyncio.sleep(0.5)
    assert production_dispatches(h) == []


@pytest.mark.parametrize("ghes", [False, True])
async def test_run_id_is_kept_also_when_the_server_does_not_return_it(harness, ghes):
    h = harness
    h.github.ghes_no_run_details = ghes
    await seed(h)
    await request_card(h)
    await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
    dispatch = (await h.wait(lambda s: production_dispatches(h)))[0]
    pid = dispatch["inputs"]["promotion_id"]

    async def run_id():
        return (await h.get(f"/api/v1/promotions/{pid}"))[1]["pipeline_run_id"]

    for _ in range(100):
        if await run_id():
            break
        await asyncio.sleep(0.1)
    assert await run_id() == str(dispatch["run_id"])
