"""Authorization from the deploy side, against the running server and the GitHub stand-in: only the run
promobot dispatched may deploy, once; everything else is refused, audited and alerted."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import Session, select

from storage.models import AuditEvent, AuthorizedRun, DeployDecision, Promotion
from tests.fakes.github_api import ACTOR, DEV
from tests.harness import TAG, authorize, dispatched, seed

APPROVERS = {"U0LEAD", "U0RM1", "U0RM2"}


def decisions(h) -> list[tuple[str, bool, str]]:
    with Session(h.bot.engine) as s:
        return [(d.run_id, d.allowed, d.reason) for d in s.exec(select(DeployDecision).order_by(DeployDecision.id))]


def audit(h, action: str) -> list[dict]:
    with Session(h.bot.engine) as s:
        return [
            e.detail for e in s.exec(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq))
        ]


def status_of(h, pid: str) -> str:
    with Session(h.bot.engine) as s:
        return s.get(Promotion, pid).status


async def until(predicate, timeout: float = 10.0):
    for _ in range(int(timeout / 0.05)):
        if value := predicate():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s")


async def denial_alerts(h, reason: str) -> dict[str, str]:
    """Where the denial for ``reason`` was told: the service channel and each approver (by DM)."""

    def told(s):
        return {
            m["channel"]: m["text"] for m in s.messages() if ":no_entry:" in m["text"] and f"({reason})" in m["text"]
        }

    return await h.wait(lambda s: set(told(s)) == {"C0DEPLOYS"} | APPROVERS and told(s))


async def test_the_dispatched_run_is_authorized_once_and_nothing_else_with_its_promotion_id(harness):
    h = harness
    await seed(h)
    dispatch = await dispatched(h)
    pid, run_id = dispatch["inputs"]["promotion_id"], str(dispatch["run_id"])
    await until(lambda: status_of(h, pid) == "dispatched")

    status, answer = await authorize(h, dispatch)
    assert status == 200 and answer["authorized"] is True and answer["decision"] == "allowed"
    assert (answer["promotion_id"], answer["run_id"], answer["run_attempt"], answer["image_tag"]) == (
        pid,
        run_id,
        1,
        TAG,
    )
    assert answer["repeated"] is False and f"is promobot's dispatch of {pid}" in answer["message"]
    # the step retried after a lost answer: the same answer, recorded again, nothing told twice
    status, again = await authorize(h, dispatch)
    assert status == 200 and again["authorized"] is True and again["repeated"] is True
    with Session(h.bot.engine) as s:
        first = s.get(AuthorizedRun, pid)
    assert (first.run_id, first.run_attempt, first.source) == (run_id, 1, "authorize")

    # a second run started with promobot's own token and the same promotion id: not the dispatched run
    second = h.github.create_run(
        "acme/api-gateway", "deploy.yml", actor=ACTOR, display_title=f"Deploy production {TAG} [{pid}]"
    )
    status, answer = await authorize(h, dispatch, run_id=second)
    assert status == 403 and answer["authorized"] is False and answer["reason"] == "not_the_dispatched_run"
    assert f"promobot dispatched run {run_id} for {pid}, not {second}" in answer["error"]
    assert answer["rule"] == "deploy authorization"

    # a re-run of the authorized run is a second deploy without a new approval
    h.github.rerun(dispatch["run_id"], actor=DEV)
    status, answer = await authorize(h, dispatch, run_attempt=2)
    assert status == 403 and answer["reason"] == "rerun_attempt" and answer["run_attempt"] == 2
    assert "attempt 2 is a re-run (started by dev)" in answer["error"] and "request a new promotion" in answer["error"]
    alerts = await denial_alerts(h, "rerun_attempt")
    assert "started by promobot (this attempt by dev)" in alerts["C0DEPLOYS"]
    assert "<@U0LEAD> <!subteam^S0RELEASE>" in alerts["C0DEPLOYS"]

    assert decisions(h) == [
        (run_id, True, "authorized"),
        (run_id, True, "authorized"),
        (str(second), False, "not_the_dispatched_run"),
        (run_id, False, "rerun_attempt"),
    ]
    allowed = audit(h, "deployment.authorized")
    assert [(a["run_id"], a["repeated"], a["source"]) for a in allowed] == [(run_id, False, "authorize")] + [
        (run_id, True, "authorize")
    ]
    denied = audit(h, "deployment.authorization_denied")
    assert [d["reason"] for d in denied] == ["not_the_dispatched_run", "rerun_attempt"]
    assert denied[1]["triggering_actor"] == "dev" and denied[1]["run_actor"] == "promobot"


async def test_a_hand_dispatched_production_run_is_refused_before_it_deploys(harness):
    h = harness
    await seed(h)
    dispatch = await dispatched(h)
    pid = dispatch["inputs"]["promotion_id"]
    # someone with Actions write dispatches the deploy workflow by hand, copying the approved promotion's inputs
    by_hand = h.github.create_run("acme/api-gateway", "deploy.yml", display_title=f"Deploy production {TAG} [{pid}]")
    status, answer = await authorize(h, dispatch, run_id=by_hand)
    assert status == 403 and answer["reason"] == "wrong_actor"
    assert f"run {by_hand} was started by dev, not by promobot" in answer["error"]
    alerts = await denial_alerts(h, "wrong_actor")
    assert f"run {by_hand}" in alerts["C0DEPLOYS"] and "started by dev" in alerts["U0RM1"]

    # ... or with a promotion id nobody approved
    status, answer = await authorize(h, dispatch, run_id=by_hand, promotion_id="prm-00000000ff")
    assert status == 403 and answer["reason"] == "unknown_promotion"
    assert "there is no promotion 'prm-00000000ff'" in answer["error"] and "/promote" in answer["error"]

    # the approved run, seen first, is still the one that may deploy
    assert (await authorize(h, dispatch))[0] == 200
    assert status_of(h, pid) == "dispatched"


async def test_a_promotion_id_reused_with_another_environment_or_digest_is_refused(harness):
    h = harness
    await seed(h)
    staging = next(d for d in h.github.dispatches() if d["inputs"]["environment"] == "staging")
    dispatch = await dispatched(h)
    status, answer = await authorize(h, dispatch, image_digest="sha256:" + "e" * 64)
    assert status == 403 and answer["reason"] == "promotion_mismatch"
    assert "digest sha256:" + "e" * 64 in answer["error"]
    status, answer = await authorize(h, staging, environment="production")
    assert status == 403 and answer["reason"] == "promotion_mismatch"
    assert "environment production (the promotion's is staging)" in answer["error"]
    # reusing them did not spend the promotion: its own run is still authorized
    assert (await authorize(h, dispatch))[1]["authorized"] is True


async def test_a_promotion_not_yet_approved_authorizes_nothing(harness):
    h = harness
    await seed(h)
    dev = h.user("U0DEV")
    await dev.command("/promote", f"api-gateway {TAG} to production")
    await h.wait(lambda s: dev.replies())
    pid = next(el["value"] for b in h.cards()[-1]["blocks"] if b["type"] == "actions" for el in b["elements"])
    by_hand = h.github.create_run("acme/api-gateway", "deploy.yml", actor=ACTOR, display_title=f"[{pid}]")
    with Session(h.bot.engine) as s:
        digest = s.get(Promotion, pid).digest
    status, answer = await authorize(
        h, service="api-gateway", environment="production", image_digest=digest, promotion_id=pid, run_id=by_hand
    )
    assert status == 403 and answer["reason"] == "not_dispatched"
    assert f"{pid} is still waiting for approval" in answer["error"]


async def test_authorized_while_the_dispatch_answer_is_still_on_its_way(harness):
    """GitHub may start the run before promobot has recorded the dispatch: approved with its dispatch sent,
    the run is checked by its name and promobot's identity, and the run recorded afterwards is the same."""
    h = harness
    await seed(h)
    h.github.dispatch_delay = 2.0
    dispatch = await dispatched(h)
    pid = dispatch["inputs"]["promotion_id"]
    assert status_of(h, pid) == "approved"
    status, answer = await authorize(h, dispatch)
    assert status == 200 and answer["authorized"] is True
    await until(lambda: status_of(h, pid) == "dispatched", timeout=15)
    with Session(h.bot.engine) as s:
        assert s.get(Promotion, pid).pipeline_run_id == s.get(AuthorizedRun, pid).run_id == str(dispatch["run_id"])


async def test_no_decision_while_github_cannot_say_whose_run_it_is(harness):
    h = harness
    await seed(h)
    dispatch = await dispatched(h)
    h.github.fail_next(count=1, status=502, path_contains=f"/actions/runs/{dispatch['run_id']}")
    status, answer = await authorize(h, dispatch)
    assert status == 503 and answer["authorized"] is False and answer["reason"] == "github_unavailable"
    assert decisions(h) == [] and audit(h, "deployment.authorized") == []
    assert (await authorize(h, dispatch))[0] == 200  # the action retries a 503


async def test_bad_requests_and_missing_tokens_change_nothing(harness):
    h = harness
    assert (await authorize(h, token=None, service="api-gateway"))[0] == 401
    status, answer = await authorize(
        h, service="api-gatewy", environment="prod", image_digest="sha256:x", promotion_id="", run_id="abc", colour=1
    )
    assert status == 400 and answer["error"] == "invalid request"
    problems = "\n".join(answer["problems"])
    for expected in (
        "image_digest: not an image digest",
        "run_id: not a workflow run id",
        "colour: Extra inputs are not permitted",
        "unknown service 'api-gatewy'",
        "unknown environment 'prod'",
    ):
        assert expected in problems, problems
    assert decisions(h) == []


@pytest.mark.parametrize("settings_overrides", [{"github_token": None}])
async def test_without_github_credentials_nothing_is_authorized(harness):
    h = harness
    status, answer = await authorize(
        h,
        service="api-gateway",
        environment="production",
        image_digest="sha256:" + "a" * 64,
        promotion_id="prm-0123456789",
        run_id=7,
    )
    assert status == 403 and answer["reason"] == "unverifiable" and "dry run" in answer["error"]


@pytest.mark.parametrize("settings_overrides", [{"promobot_tracking_poll_interval": 600}])
async def test_with_no_run_recorded_the_first_of_promobots_runs_is_the_one(harness):
    """Older GitHub Enterprise Server answers a dispatch without its run id: until one is recorded, a run
    promobot started with the promotion id in its name may deploy, and the first one authorized is the only one."""
    import sqlalchemy as sa

    from storage.db import transaction

    h = harness
    await seed(h)
    dispatch = await dispatched(h)
    pid = dispatch["inputs"]["promotion_id"]
    await until(lambda: status_of(h, pid) == "dispatched")
    with transaction(h.bot.engine) as s:
        s.execute(sa.update(Promotion).where(Promotion.id == pid).values(pipeline_run_id=None, run_url=None))
    twin = h.github.create_run("acme/api-gateway", "deploy.yml", actor=ACTOR, display_title=f"Deploy [{pid}]")
    assert (await authorize(h, dispatch))[1]["authorized"] is True
    status, answer = await authorize(h, dispatch, run_id=twin)
    assert status == 403 and answer["reason"] == "another_run"
    assert f"{pid} already authorized run {dispatch['run_id']}" in answer["error"]
    assert "a promotion authorizes one run" in answer["error"]
    await denial_alerts(h, "another_run")
