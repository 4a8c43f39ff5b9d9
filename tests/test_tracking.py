"""After the dispatch: GitHub webhooks and polling follow the run, the verification deadline, and the
automatic rollback request when production fails."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlmodel import Session, select

from handlers import github_webhook
from storage.db import transaction
from storage.models import AuditEvent, Deployment, Promotion
from tests.github_webhooks import deliver, headers, workflow_run
from tests.harness import (
    TAG,
    all_text,
    deployed,
    header_text,
    production_dispatches,
    request_card,
    seed,
    valid_record,
    verified,
)

OLD = "0c0ffee"


async def until(predicate, timeout: float = 10.0):
    for _ in range(int(timeout / 0.05)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s")


def promotion(h, pid: str) -> Promotion:
    with Session(h.bot.engine) as s:
        return s.get(Promotion, pid)


def audit_trail(h, pid: str) -> list[tuple[str, str]]:
    with Session(h.bot.engine) as s:
        return [
            (e.action, e.actor)
            for e in s.exec(select(AuditEvent).where(AuditEvent.promotion_id == pid).order_by(AuditEvent.seq))
        ]


async def dispatched_to_production(h, approver: str = "U0LEAD") -> tuple[str, dict]:
    """The seeded artifact requested, approved and dispatched to production: (promotion id, its run)."""
    await request_card(h)
    await h.user(approver).click(h.cards()[-1], "promotion.approve")
    dispatch = (await h.wait(lambda s: [d for d in production_dispatches(h) if d["inputs"]["image_tag"] == TAG]))[0]
    pid = dispatch["inputs"]["promotion_id"]
    await until(lambda: promotion(h, pid).status == "dispatched")
    return pid, next(r for r in h.github.runs() if r["id"] == dispatch["run_id"])


def thread(h, pid: str) -> list[str]:
    card = next(c for c in h.cards(target=None) if pid in all_text(c))
    return [m["text"] for m in h.slack.messages(card["channel"]) if m.get("thread_ts") == card["ts"]]


async def test_webhook_needs_a_valid_signature_and_a_configured_secret(harness):
    h = harness
    url = f"{h.base_url}/github/webhook"
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    async with h.session.post(url, data=body, headers=headers(body, event="ping")) as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "pong"
    for bad in (
        headers(body, event="ping", secret="another-secret"),
        {**headers(body, event="ping"), "X-Hub-Signature-256": "sha256=" + "0" * 64},
        {k: v for k, v in headers(body, event="ping").items() if k != "X-Hub-Signature-256"},
        headers(body + b" ", event="ping"),
    ):
        async with h.session.post(url, data=body, headers=bad) as resp:
            assert resp.status == 401, bad
            assert "GITHUB_WEBHOOK_SECRET" in (await resp.json())["error"]

    # without GITHUB_WEBHOOK_SECRET nothing unsigned is ever accepted, and the answer says why
    app = web.Application()
    app.add_routes(github_webhook.routes(h.bot.service.tracker, None))
    server = TestServer(app)
    await server.start_server()
    try:
        async with h.session.post(
            server.make_url("/github/webhook"), data=body, headers=headers(body, event="ping")
        ) as resp:
            assert resp.status == 503 and "set GITHUB_WEBHOOK_SECRET" in (await resp.json())["error"]
    finally:
        await server.close()


async def test_workflow_run_success_is_recorded_once_across_webhook_redelivery_and_pipeline_report(harness):
    h = harness
    await seed(h)
    pid, run = await dispatched_to_production(h)
    # a run of another repository with the same name never moves the promotion
    status, answer = await deliver(h.session, h.base_url, workflow_run(run, repository="acme/billing"))
    assert (status, answer["status"]) == (202, "ignored")

    h.github.complete_run(run["id"], "success")
    status, answer = await deliver(h.session, h.base_url, workflow_run(run), delivery="delivery-1")
    assert (status, answer["status"]) == (202, "recorded")
    assert promotion(h, pid).status == "deployed"
    await h.wait(lambda s: [u for u in s.updates("C0DEPLOYS") if "→ production · Deployed" in header_text(u)])

    # GitHub redelivers (or a second replica got the same delivery): acted on once
    status, answer = await deliver(h.session, h.base_url, workflow_run(run), delivery="delivery-1")
    assert (status, answer["status"]) == (200, "duplicate")
    # the deploy workflow reports the same run itself: nothing moves twice, nothing is recorded twice
    status, answer = await h.event(deployed("api-gateway", TAG, "production", run_id=str(run["id"])))
    assert (status, answer["result"]) == (202, "duplicate")
    with Session(h.bot.engine) as s:
        rows = s.exec(select(Deployment).where(Deployment.environment == "production")).all()
    assert [(d.status, d.run_id, d.promotion_id) for d in rows] == [("success", str(run["id"]), pid)]

    assert (await h.event(verified("api-gateway", TAG, "production")))[0] == 202
    assert promotion(h, pid).status == "verified"
    assert [a for a, _ in audit_trail(h, pid)] == [
        "promotion.requested",
        "promotion.approval",
        "promotion.approved",
        "dispatch.sent",
        "deployment.finished",
        "verification.finished",
    ]
    assert ("deployment.finished", "github-webhook") in audit_trail(h, pid)
    assert sum("Deployed; waiting for verification." in t for t in thread(h, pid)) == 1


async def test_a_foreign_run_titled_with_the_promotion_id_changes_nothing(harness):
    """A failing pull_request CI run whose title quotes a dispatched promotion's id is not that promotion's
    run: it is logged and ignored, the production slot stays taken, and no second deploy is approved."""
    h = harness
    await seed(h)
    pid, run = await dispatched_to_production(h)
    before = audit_trail(h, pid)
    foreign = h.github.create_run(
        "acme/api-gateway", "ci.yml", event="pull_request", display_title=f"Fix flaky test (follow-up to {pid})"
    )
    h.github.complete_run(foreign, "failure")
    by_hand = h.github.create_run(  # the deploy workflow, but dispatched by a person, quoting the id
        "acme/api-gateway", "deploy.yml", display_title=f"Deploy production {TAG} [{pid}]"
    )
    h.github.complete_run(by_hand, "failure")
    for run_id in (foreign, by_hand):
        other = next(r for r in h.github.runs() if r["id"] == run_id)
        status, answer = await deliver(h.session, h.base_url, workflow_run(other, conclusion="failure"))
        assert (status, answer["status"]) == (202, "ignored")
    p = promotion(h, pid)
    assert (p.status, p.pipeline_run_id) == ("dispatched", str(run["id"]))
    assert audit_trail(h, pid) == before
    # the slot is still held: a second production promotion is refused while the first deploys
    dev2 = h.user("U0DEV2")
    await dev2.command("/promote", f"api-gateway {TAG} to production")
    assert f"Promotion `{pid}`" in (await h.wait(lambda s: dev2.replies()))[0]["text"]
    assert len(production_dispatches(h)) == 1

    # the real run still moves it
    h.github.complete_run(run["id"], "success")
    status, answer = await deliver(h.session, h.base_url, workflow_run(run))
    assert (status, answer["status"]) == (202, "recorded") and promotion(h, pid).status == "deployed"


async def test_without_a_recorded_run_only_promobots_own_dispatch_is_linked_by_its_title(harness):
    h = harness
    await seed(h)
    pid, run = await dispatched_to_production(h)
    with transaction(h.bot.engine) as s:  # as after a GHES dispatch that answered 204 without run details
        s.execute(sa.update(Promotion).where(Promotion.id == pid).values(pipeline_run_id=None, run_url=None))
    by_hand = h.github.create_run("acme/api-gateway", "deploy.yml", display_title=f"Deploy production {TAG} [{pid}]")
    other = next(r for r in h.github.runs() if r["id"] == by_hand)
    status, answer = await deliver(h.session, h.base_url, workflow_run(other, action="requested"))
    assert (status, answer["status"]) == (202, "ignored")
    assert promotion(h, pid).pipeline_run_id is None
    status, answer = await deliver(h.session, h.base_url, workflow_run(run, action="requested"))
    assert (status, answer["status"]) == (202, "linked") and promotion(h, pid).pipeline_run_id == str(run["id"])


async def test_requested_webhook_links_a_run_the_dispatch_answer_did_not_name(harness):
    h = harness
    await seed(h)
    pid, run = await dispatched_to_production(h)
    with transaction(h.bot.engine) as s:  # as after a GHES dispatch that answered 204 without run details
        s.execute(sa.update(Promotion).where(Promotion.id == pid).values(pipeline_run_id=None, run_url=None))
    status, answer = await deliver(h.session, h.base_url, workflow_run(run, action="requested"))
    assert (status, answer["status"]) == (202, "linked")
    assert promotion(h, pid).pipeline_run_id == str(run["id"])
    assert promotion(h, pid).status == "dispatched"
    await until(lambda: any(f"run {run['id']}" in t and "linked" in t for t in thread(h, pid)))


async def test_failed_run_fails_production_and_says_there_is_no_known_good_artifact(harness):
    h = harness
    await seed(h)
    pid, run = await dispatched_to_production(h)
    h.github.complete_run(run["id"], "cancelled")
    status, answer = await deliver(h.session, h.base_url, workflow_run(run, conclusion="cancelled"))
    assert (status, answer["status"]) == (202, "recorded")
    p = promotion(h, pid)
    assert (p.status, p.reason) == ("failed", "deployment failed")
    await h.wait(lambda s: [u for u in s.updates("C0DEPLOYS") if "→ production · Failed" in header_text(u)])

    alert = (await h.wait(lambda s: [m for m in s.messages("C0DEPLOYS") if "No rollback was requested" in m["text"]]))[
        0
    ]
    assert "Deployment failed for api-gateway `7a3f9c2` in production" in alert["text"]
    assert "nothing known-good to roll back to" in alert["text"] and "<@U0LEAD>" in alert["text"]
    dms = await h.wait(
        lambda s: (
            {
                m["channel"]
                for m in s.messages()
                if "No rollback was requested" in m["text"] and m["channel"].startswith("U")
            }
            == {"U0LEAD", "U0RM1", "U0RM2"}
        )
    )
    assert dms
    await until(lambda: ("rollback.automatic", "promobot") in audit_trail(h, pid))


async def test_polling_records_the_outcome_when_no_webhook_arrives(harness):
    h = harness
    await seed(h)
    pid, run = await dispatched_to_production(h)
    with transaction(h.bot.engine) as s:  # no run id either: the poll finds the run by the promotion id in its name
        s.execute(sa.update(Promotion).where(Promotion.id == pid).values(pipeline_run_id=None, run_url=None))
    h.github.complete_run(run["id"], "success")
    await until(lambda: promotion(h, pid).status == "deployed")
    assert promotion(h, pid).pipeline_run_id == str(run["id"])
    assert ("deployment.finished", "github-poll") in audit_trail(h, pid)
    assert any(
        r["path"].endswith("/runs") and r["query"].get("event") == "workflow_dispatch" for r in h.github.requests()
    )

    # the next one has its run id: the poll asks for that run
    await h.event(verified("api-gateway", TAG, "production"))
    await until(lambda: promotion(h, pid).status == "verified")


async def test_polling_follows_a_known_run_to_its_failure(harness):
    h = harness
    await seed(h)
    pid, run = await dispatched_to_production(h)
    h.github.start_run(run["id"])
    await asyncio.sleep(0.8)  # a few passes see it in progress: nothing changes
    assert promotion(h, pid).status == "dispatched"
    h.github.complete_run(run["id"], "failure")
    await until(lambda: promotion(h, pid).status == "failed")
    assert any(r["path"] == f"/repos/acme/api-gateway/actions/runs/{run['id']}" for r in h.github.requests())
    assert [a for a, _ in audit_trail(h, pid)].count("deployment.finished") == 1


async def test_no_verification_within_the_deadline_fails_the_promotion(harness):
    h = harness
    await seed(h, envs=("dev",))  # gate 1 dispatches staging by itself
    dispatch = (await h.wait(lambda s: [d for d in h.github.dispatches() if d["inputs"]["environment"] == "staging"]))[
        0
    ]
    pid = dispatch["inputs"]["promotion_id"]
    await until(lambda: promotion(h, pid).status == "dispatched")
    assert (await h.event(deployed("api-gateway", TAG, "staging", run_id=str(dispatch["run_id"]))))[0] == 202
    await asyncio.sleep(0.7)
    assert promotion(h, pid).status == "deployed"  # within the deadline (1h by default)

    h.clock.fixed = datetime.now(UTC) + timedelta(hours=1, minutes=1)
    await until(lambda: promotion(h, pid).status == "failed")
    assert promotion(h, pid).reason == "no verification within 1h"
    await until(lambda: any("Verification failed in staging (no verification within 1h)" in t for t in thread(h, pid)))
    assert audit_trail(h, pid)[-1] == ("verification.finished", "promobot")
    _status, record = await h.get(f"/api/v1/promotions/{pid}")
    assert valid_record(record)["verifications"][0]["checks"] == {"no verification within 1h": "missed"}
    assert record["verification_results"]["staging"] == "FAILED" and record["status"] == "FAILED"
    # a late verification is recorded, but the promotion stays failed; staging is not rolled back
    await h.event(verified("api-gateway", TAG, "staging"))
    assert promotion(h, pid).status == "failed"
    assert "rollback.automatic" not in [a for a, _ in audit_trail(h, pid)]


@pytest.mark.parametrize("failure", ["verification failed", "deployment failed", "no verification within 1h"])
async def test_failed_production_requests_a_rollback_to_the_last_known_good(harness, failure):
    h = harness
    await seed(h, tag=OLD, envs=("dev", "staging", "production"))  # OLD ran verified in production
    h.slack.reset()
    h.slack.usergroups = {"S0RELEASE": ["U0RM1", "U0RM2"]}
    await seed(h)
    pid, run = await dispatched_to_production(h)
    status = "failure" if failure == "deployment failed" else "success"
    assert (await h.event(deployed("api-gateway", TAG, "production", status, run_id=str(run["id"]))))[0] == 202
    if failure == "verification failed":
        assert (await h.event(verified("api-gateway", TAG, "production", result="failed", checks={})))[0] == 202
    if failure != "no verification within 1h":  # requested before the pipeline is answered
        assert [c for c in h.cards() if header_text(c).startswith("Rollback")]
    else:
        h.clock.fixed = datetime.now(UTC) + timedelta(hours=1, minutes=1)
    await until(lambda: promotion(h, pid).status == "failed")
    assert promotion(h, pid).reason == failure

    card = (await h.wait(lambda s: [c for c in h.cards() if header_text(c).startswith("Rollback")]))[0]
    assert "Waiting for approval" in header_text(card)
    assert f"back to `{OLD}`" in all_text(card) and pid in all_text(card)  # the why names the failed promotion
    rollback_id = next(el["value"] for b in card["blocks"] if b["type"] == "actions" for el in b["elements"])

    def dms(s):
        return {
            m["channel"]: m["text"] for m in s.messages() if m["channel"].startswith("U") and rollback_id in m["text"]
        }

    await h.wait(lambda s: set(dms(s)) == {"U0LEAD", "U0RM1", "U0RM2"})
    assert all("rollback of api-gateway `0c0ffee`" in t and ":rotating_light:" in t for t in dms(h.slack).values())
    alert = (
        await h.wait(
            lambda s: [m["text"] for m in s.messages("C0DEPLOYS") if "promobot requested a rollback" in m["text"]]
        )
    )[0]
    assert f"{failure[0].upper()}{failure[1:]} for api-gateway `7a3f9c2` in production" in alert
    assert rollback_id in alert and "<@U0LEAD> <!subteam^S0RELEASE>" in alert
    assert any(f"Rollback to `{OLD}` requested: `{rollback_id}`" in t for t in thread(h, pid))
    await until(lambda: audit_trail(h, pid)[-1] == ("rollback.automatic", "promobot"))

    # the same approval rules: an approver approves, and OLD is dispatched to production
    await h.user("U0RM2").click(card, "promotion.approve")
    back = (
        await h.wait(lambda s: [d for d in production_dispatches(h) if d["inputs"]["promotion_id"] == rollback_id])
    )[0]
    assert back["inputs"]["image_tag"] == OLD

    # a failed rollback is not rolled back in turn: the approvers are told to act
    await until(lambda: promotion(h, rollback_id).status == "dispatched")
    await h.event(deployed("api-gateway", OLD, "production", "failure", run_id=str(back["run_id"])))
    await h.wait(
        lambda s: (
            {
                m["channel"]
                for m in s.messages()
                if "The rollback of api-gateway to `0c0ffee`" in m["text"] and "act by hand" in m["text"]
            }
            == {"C0DEPLOYS", "U0LEAD", "U0RM1", "U0RM2"}
        )
    )
    await asyncio.sleep(0.7)  # the tracking pass (any replica) finds nothing left to request
    with Session(h.bot.engine) as s:
        rollbacks = s.exec(select(Promotion).where(Promotion.kind == "rollback")).all()
    assert [r.id for r in rollbacks] == [rollback_id]


async def test_a_rollback_queued_by_a_process_that_died_is_requested_by_the_next_pass(harness, monkeypatch):
    h = harness
    await seed(h, tag=OLD, envs=("dev", "staging", "production"))
    h.slack.reset()
    h.slack.usergroups = {"S0RELEASE": ["U0RM1", "U0RM2"]}
    await seed(h)
    pid, run = await dispatched_to_production(h)

    async def died(promotion_id):  # the process died right after committing the failure
        return None

    rollbacks = h.bot.service.rollbacks
    monkeypatch.setattr(rollbacks, "after_failure", died)
    monkeypatch.setattr(rollbacks, "orphaned_after", timedelta(0))  # another replica steps in (1 min in service)
    await h.event(deployed("api-gateway", TAG, "production", run_id=str(run["id"])))
    await h.event(verified("api-gateway", TAG, "production", result="failed"))
    card = (await h.wait(lambda s: [c for c in h.cards() if header_text(c).startswith("Rollback")]))[0]
    assert f"back to `{OLD}`" in all_text(card)
    await until(lambda: audit_trail(h, pid)[-1] == ("rollback.automatic", "promobot"))
