"""Out-of-band deployments are seen and never trusted: a report into a later environment that no promobot
promotion dispatched is recorded apart, audited, alerted and flagged, and counts as no evidence at all (not
as deployed or verified, not for soak, not as known good, not in the metrics)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from storage import metrics
from storage.models import AuditEvent, Deployment, OutOfBandReport, Verification
from tests.harness import (
    CONFIG,
    TAG,
    all_text,
    artifact,
    deployed,
    dispatched,
    open_home,
    production_dispatches,
    promotion,
    seed,
    through_promotion,
    verified,
)

OLD = "0c0ffee"  # verified in production through a promotion: the known-good one
HAND = "deadbee"  # built, then deployed to production by hand
SKIP = "5c1f00d"  # built, then deployed to staging by hand, skipping dev
APPROVERS = {"U0LEAD", "U0RM1", "U0RM2"}


def out_of_band_alerts(h, tag: str, kind: str = "deployment") -> dict[str, str]:
    """Where the out-of-band report was told: channel or approver → text."""
    return {
        m["channel"]: m["text"]
        for m in h.slack.messages()
        if f":warning: Out-of-band {kind}" in m["text"] and f"`{tag}`" in m["text"]
    }


def actions(h, action: str) -> list[dict]:
    with Session(h.bot.engine) as s:
        return [
            e.detail for e in s.exec(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq))
        ]


async def status_text(h, service: str = "api-gateway") -> str:
    person = h.user("U0DEV")
    await person.command("/status", service)
    return all_text((await h.wait(lambda s: person.replies()))[0])


async def test_an_out_of_band_production_report_alerts_and_its_tag_is_neither_eligible_nor_known_good(harness):
    h = harness
    await seed(h, tag=OLD, envs=("dev", "staging", "production"))
    for tag in (HAND, SKIP):
        h.github.add_commits("acme/api-gateway", "main", [artifact("api-gateway", tag)["commit_sha"]])
        assert (await h.event(artifact("api-gateway", tag)))[0] == 202

    # someone deploys HAND to production by hand and its pipeline reports it, verified
    status, answer = await h.event(deployed("api-gateway", HAND, "production", run_id="9001", event_id="hand-1"))
    assert status == 409 and answer["rule"] == "out-of-band report"
    assert (
        "production takes only the deployments and verifications of the promotion promobot dispatched"
        in answer["error"]
    )
    assert "no promobot promotion of api-gateway into production is in progress" in answer["error"]
    status, answer = await h.event(verified("api-gateway", HAND, "production"))
    assert status == 409 and answer["rule"] == "out-of-band report"
    told = await h.wait(
        lambda s: set(out_of_band_alerts(h, HAND)) == {"C0DEPLOYS"} | APPROVERS and out_of_band_alerts(h, HAND)
    )
    assert (
        "Out-of-band deployment in production: api-gateway `deadbee` (success), reported by pipeline, run 9001"
        in told["C0DEPLOYS"]
    )
    assert "<@U0LEAD> <!subteam^S0RELEASE>" in told["C0DEPLOYS"] and "never counts as evidence" in told["U0RM1"]
    # a resend of the same report gets the same answer and tells nobody again
    assert (await h.event(deployed("api-gateway", HAND, "production", run_id="9001", event_id="hand-1")))[0] == 409
    assert sum(":warning: Out-of-band deployment" in m["text"] for m in h.slack.messages("C0DEPLOYS")) == 1

    # ... and SKIP to staging, skipping dev: nothing makes it eligible for production
    for event in (deployed("api-gateway", SKIP, "staging"), verified("api-gateway", SKIP, "staging")):
        assert (await h.event(event))[0] == 409
    status, report = await h.get(f"/api/v1/eligibility?service=api-gateway&tag={SKIP}&environment=production")
    refused = {g["gate"] for g in report["gates"] if g["status"] != "passed"}
    assert (
        report["eligible"] is False
        and {"previous_environment_verified", "no_skipped_environment", "soak_time"} <= refused
    )

    # none of it is evidence: production still runs OLD, with the hand deploy flagged (what, who, when)
    text = await status_text(h)
    production = text.split("*production*")[1]
    assert production.startswith(f": `{OLD}`")
    assert f":warning: out-of-band verification of `{HAND}` (passed) reported by pipeline" in production
    assert "refused: no promobot promotion of api-gateway into production is in progress" in production
    with Session(h.bot.engine) as s:
        assert {d.tag for d in s.exec(select(Deployment))} == {OLD}
        assert {v.tag for v in s.exec(select(Verification))} == {OLD}
        reports = s.exec(select(OutOfBandReport).order_by(OutOfBandReport.id)).all()
    assert [(r.kind, r.tag, r.environment, r.accepted) for r in reports] == [
        ("deployment", HAND, "production", False),
        ("verification", HAND, "production", False),
        ("deployment", SKIP, "staging", False),
        ("verification", SKIP, "staging", False),
    ]
    assert [d["tag"] for d in actions(h, "deployment.out_of_band_refused")] == [HAND, SKIP]

    # TAG goes to production through a promotion; the last known-good to roll back to is OLD, never HAND
    await seed(h)
    await through_promotion(h, TAG, "production")
    assert "⚠" not in (await status_text(h)).split("*production*")[1].split("*")[0]  # promobot deployed since
    person = h.user("U0DEV")
    await person.command("/rollback", f"api-gateway {HAND} in production")
    assert f"`{HAND}` was never verified in production" in all_text((await h.wait(lambda s: person.replies()))[0])
    await person.command("/rollback", "api-gateway in production checkout errors")
    await h.wait(lambda s: person.replies())
    card = h.cards()[-1]
    assert f"back to `{OLD}`" in all_text(card)

    # and the metrics count promobot's deployments only
    with Session(h.bot.engine) as s:
        now = datetime.now(UTC)
        report = metrics.compute(s, start=now - timedelta(days=30), end=now + timedelta(minutes=1))
    dora = next(d for d in report.dora if d.service == "api-gateway")
    assert dora.deployments == 2  # OLD and TAG, each by a promotion
    production_promotions = next(
        p for p in report.promotions if p.service == "api-gateway" and p.environment == "production"
    )
    assert production_promotions.completed == 2


async def test_a_report_from_another_run_than_the_dispatched_one_is_out_of_band(harness):
    h = harness
    await seed(h)
    dispatch = await dispatched(h)
    pid = dispatch["inputs"]["promotion_id"]
    # GitHub has the dispatch a moment before promobot has recorded it (and its run) as dispatched
    await h.wait(lambda s: promotion(h, pid).status == "dispatched")
    status, answer = await h.event(deployed("api-gateway", TAG, "production", run_id="4711"))
    assert (
        status == 409
        and f"it comes from run 4711, but promobot dispatched run {dispatch['run_id']} for {pid}" in answer["error"]
    )
    # the dispatched run's own report moves the promotion
    status, answer = await h.event(deployed("api-gateway", TAG, "production", run_id=str(dispatch["run_id"])))
    assert (status, answer["result"]) == (202, "recorded")


async def test_a_promotion_id_reused_with_another_environment_or_artifact_is_refused_everywhere(harness):
    h = harness
    await seed(h)
    staging = next(d for d in h.github.dispatches() if d["inputs"]["environment"] == "staging")
    dispatch = await dispatched(h)
    for event in (
        deployed(
            "api-gateway",
            TAG,
            "production",
            run_id=str(dispatch["run_id"]),
            promotion_id=staging["inputs"]["promotion_id"],
        ),
        deployed("api-gateway", TAG, "dev", promotion_id=dispatch["inputs"]["promotion_id"]),
        verified("api-gateway", TAG, "production", promotion_id="prm-0000000000"),
        deployed(
            "api-gateway",
            TAG,
            "production",
            promotion_id=dispatch["inputs"]["promotion_id"],
            digest="sha256:" + "e" * 64,
        ),
    ):
        status, answer = await h.event(event)
        assert status == 409, answer
        assert answer["rule"] in ("promotion mismatch", "conflict"), answer
    mismatches = actions(h, "deployment.promotion_mismatch") + actions(h, "verification.promotion_mismatch")
    assert len(mismatches) == 3
    alert = await h.wait(
        lambda s: [m["text"] for m in s.messages("C0DEPLOYS") if "named a promotion that is not its own" in m["text"]]
    )
    assert "to staging, not api-gateway `7a3f9c2`" in alert[0]
    # the right claims still link: the promotion was not spent by the refusals
    event = deployed(
        "api-gateway",
        TAG,
        "production",
        run_id=str(dispatch["run_id"]),
        promotion_id=dispatch["inputs"]["promotion_id"],
    )
    event["digest"] = dispatch["inputs"]["image_digest"]
    assert (await h.event(event)) == (202, {"status": "accepted", "result": "recorded", "type": "deployment.finished"})
    assert len(production_dispatches(h)) == 1


@pytest.mark.parametrize(
    "config_text",
    [CONFIG.replace("  require_sbom: true\n", "  require_sbom: true\n  out_of_band_environments: [staging]\n")],
)
async def test_an_environment_that_takes_out_of_band_reports_records_and_flags_them(harness):
    h = harness
    await seed(h, envs=("dev",))  # gate 1 dispatches staging by itself
    staging = (await h.wait(lambda s: [d for d in h.github.dispatches() if d["inputs"]["environment"] == "staging"]))[0]
    h.github.add_commits("acme/api-gateway", "main", [artifact("api-gateway", SKIP)["commit_sha"]])
    assert (await h.event(artifact("api-gateway", SKIP)))[0] == 202
    event = {**deployed("api-gateway", SKIP, "staging", run_id="31337"), "event_id": "by-hand-1"}
    assert await h.event(event) == (202, {"status": "accepted", "result": "out_of_band", "type": "deployment.finished"})
    assert (await h.event(event))[1]["result"] == "out_of_band"  # a resend: the same answer
    assert (await h.event(verified("api-gateway", SKIP, "staging")))[1]["result"] == "out_of_band"
    told = await h.wait(
        lambda s: [m["text"] for m in s.messages("C0DEPLOYS") if ":warning: Out-of-band deployment" in m["text"]]
    )
    assert len(told) == 1 and "staging takes out-of-band reports (policy.out_of_band_environments)" in told[0]
    assert [d["accepted"] for d in actions(h, "deployment.out_of_band")] == [True]

    _status, report = await h.get(f"/api/v1/eligibility?service=api-gateway&tag={SKIP}&environment=production")
    assert report["eligible"] is False
    staging_status = (await status_text(h)).split("*staging*")[1].split("*production*")[0]
    assert ":warning: out-of-band verification of `5c1f00d` (passed) reported by pipeline" in staging_status
    assert ", recorded: promobot's promotion into staging" in staging_status

    # /status for every service and App Home flag it too
    person = h.user("U0DEV")
    await person.command("/status", "")
    overview = all_text((await h.wait(lambda s: person.replies()))[0])
    assert (
        "staging —⏳⚠" in overview
    )  # promobot has deployed nothing there yet; its promotion is in progress and "⚠ out-of-band report (never evidence)" in overview
    view = await open_home(h, "U0LEAD")
    assert "Out-of-band reports" in [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]
    home = "\n".join(b.get("text", {}).get("text", "") for b in view["blocks"] if b["type"] == "section")
    assert "*api-gateway* in *staging*: :warning: out-of-band verification of `5c1f00d`" in home

    # promobot's own deployment of TAG into staging replaces it: the flag goes
    assert (await h.event(deployed("api-gateway", TAG, "staging", run_id=str(staging["run_id"]))))[1][
        "result"
    ] == "recorded"
    assert ":warning: out-of-band" not in (await status_text(h)).split("*staging*")[1].split("*production*")[0]


def test_out_of_band_environments_must_be_configured_environments():
    from bot.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as exc:
        parse_config(
            CONFIG.replace("  require_sbom: true\n", "  require_sbom: true\n  out_of_band_environments: [qa]\n")
        )
    assert "policy.out_of_band_environments: unknown environment(s) qa" in str(exc.value)
