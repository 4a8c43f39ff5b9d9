"""promobot as a GitHub custom deployment protection rule: signed ``deployment_protection_rule`` deliveries
(GitHub's own payload, tests/fixtures/github/) get the deploy guard's decision, answered through the run's
review endpoint of the GitHub stand-in."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import Session, select

from storage.models import AuditEvent, AuthorizedRun, ProtectionRuleReview
from tests.fakes.github_api import APP_BOT
from tests.github_webhooks import deliver, protection_rule
from tests.harness import TAG, authorize, dispatched, fixture_json, github_app_settings, seed

AS_APP = pytest.mark.parametrize("settings_overrides", [github_app_settings()])


def run_json(h, run_id: int) -> dict:
    return next(r for r in h.github.runs() if r["id"] == run_id)


async def ask(
    h, run_id: int, environment: str = "production", *, delivery: str | None = None, **kw
) -> tuple[int, dict]:
    return await deliver(
        h.session,
        h.base_url,
        protection_rule(run_json(h, run_id), environment, api_url=h.github.api_url, **kw),
        event="deployment_protection_rule",
        delivery=delivery,
    )


def reviews(h) -> list[tuple[int, str, str | None]]:
    return [(r["run_id"], r["environment_name"], r["state"]) for r in h.github.protection_rule_reviews()]


@AS_APP
async def test_github_holds_a_hand_dispatched_run_and_releases_promobots_own(harness):
    h = harness
    await seed(h)
    dispatch = await dispatched(h)
    pid, run_id = dispatch["inputs"]["promotion_id"], dispatch["run_id"]
    assert run_json(h, run_id)["actor"] == APP_BOT  # an App's dispatch is started by its bot user

    # someone edited the workflow to skip the authorize step and dispatched it by hand: GitHub asks anyway
    by_hand = h.github.create_run("acme/api-gateway", "deploy.yml", display_title=f"Deploy production {TAG} [{pid}]")
    status, answer = await ask(h, by_hand)
    assert (status, answer["status"], answer["answered"]) == (202, "rejected", True)
    review = h.github.protection_rule_reviews()[-1]
    assert (review["run_id"], review["environment_name"], review["state"]) == (by_hand, "production", "rejected")
    assert review["comment"].startswith(f"promobot rejected this deployment. Deploy refused of {pid} (wrong_actor)")
    assert "not by promobot[bot]" in review["comment"] and len(review["comment"]) <= 1024
    alert = await h.wait(
        lambda s: [
            m["text"] for m in s.messages("C0DEPLOYS") if ":no_entry:" in m["text"] and "wrong_actor" in m["text"]
        ]
    )
    assert "asked through GitHub's protection rule" in alert[0] and "started by dev" in alert[0]

    # promobot's own run is released, and its authorize step then gets the same answer
    status, answer = await ask(h, run_id, delivery="delivery-42")
    assert (status, answer["status"], answer["answered"]) == (202, "approved", True)
    assert reviews(h) == [(by_hand, "production", "rejected"), (run_id, "production", "approved")]
    assert f"is promobot's dispatch of {pid}" in h.github.protection_rule_reviews()[-1]["comment"]
    with Session(h.bot.engine) as s:
        assert s.get(AuthorizedRun, pid).source == "protection_rule"
    status, answer = await authorize(h, dispatch)
    assert status == 200 and answer["repeated"] is True

    # a redelivery is acted on once; a job of the same run aimed at another environment is refused
    status, answer = await ask(h, run_id, delivery="delivery-42")
    assert (status, answer["status"]) == (200, "duplicate")
    status, answer = await ask(h, run_id, environment="staging")
    assert answer["status"] == "rejected" and "promotion_mismatch" in h.github.protection_rule_reviews()[-1]["comment"]
    with Session(h.bot.engine) as s:
        answered = [
            e.detail["state"] for e in s.exec(select(AuditEvent).where(AuditEvent.action == "protection_rule.answered"))
        ]
    assert answered == ["rejected", "approved", "rejected"]


@AS_APP
async def test_an_answer_github_did_not_take_is_sent_again_by_the_tracking_pass(harness):
    h = harness
    await seed(h)
    dispatch = await dispatched(h)
    h.github.fail_next(count=1, status=502, path_contains="/deployment_protection_rule")
    status, answer = await ask(h, dispatch["run_id"])
    assert (status, answer["status"], answer["answered"]) == (202, "approved", False)
    await h.wait(lambda s: reviews(h) == [(dispatch["run_id"], "production", "approved")])

    def recorded(_: object) -> ProtectionRuleReview | None:
        # GitHub has the answer before promobot has written down that it was taken
        with Session(h.bot.engine) as s:
            review = s.exec(select(ProtectionRuleReview)).one()
        return review if review.answered_at is not None else None

    review = await h.wait(recorded)
    assert review.attempts == 2 and review.answered_at is not None


async def test_with_a_token_instead_of_an_app_the_answer_cannot_be_sent_and_the_channel_is_told(harness):
    h = harness
    await seed(h)
    dispatch = await dispatched(h)
    status, answer = await ask(h, dispatch["run_id"])
    assert (status, answer["status"], answer["answered"]) == (202, "approved", False)
    alert = await h.wait(
        lambda s: [m["text"] for m in s.messages("C0DEPLOYS") if "did not take the answer" in m["text"]]
    )
    assert "GitHub answered 403" in alert[0] and "GITHUB_APP_ID" in alert[0]
    await asyncio.sleep(0.8)  # the tracking pass tries again; the channel is told once
    assert sum("did not take the answer" in m["text"] for m in h.slack.messages("C0DEPLOYS")) == 1
    assert reviews(h) == []


@AS_APP
async def test_a_delivery_that_names_no_run_is_ignored_and_github_is_not_called(harness):
    h = harness
    payload = fixture_json("github/webhook-deployment_protection_rule-requested.json")  # as GitHub documents it
    status, answer = await deliver(h.session, h.base_url, payload, event="deployment_protection_rule")
    assert (status, answer["status"], answer["answered"]) == (202, "ignored", False)
    seed_run = h.github.create_run("acme/api-gateway", "deploy.yml")
    # a callback URL of another repository, or any other URL, names nothing promobot answers
    for callback in (
        f"{h.github.api_url}/repos/acme/billing/actions/runs/{seed_run}/deployment_protection_rule",
        f"{h.github.api_url}/repos/acme/api-gateway/actions/runs/{seed_run}/cancel",
    ):
        status, answer = await ask(h, seed_run, callback=callback)
        assert answer["status"] == "ignored"
    assert reviews(h) == [] and not [r for r in h.github.requests() if r["method"] == "POST"]


@AS_APP
async def test_environments_and_repositories_promobot_does_not_know_are_refused(harness):
    h = harness
    run_id = h.github.create_run("acme/api-gateway", "deploy.yml")
    _status, answer = await ask(h, run_id, environment="preview")
    assert answer["status"] == "rejected" and "unknown_environment" in h.github.protection_rule_reviews()[-1]["comment"]
    h.github.add_repo("acme/website")
    other = h.github.create_run("acme/website", "deploy.yml")
    _status, answer = await deliver(
        h.session,
        h.base_url,
        protection_rule(run_json(h, other), "production", api_url=h.github.api_url, repository="acme/website"),
        event="deployment_protection_rule",
    )
    assert answer["status"] == "rejected" and "unknown_service" in h.github.protection_rule_reviews()[-1]["comment"]
