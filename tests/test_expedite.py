"""Expedited promotion, the promotion model's exception for critical security patches: through the real
server, with Slack's signed requests, the pipeline API, the CLI, the metrics and the digest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from bot.config import DigestConfig
from handlers.blocks.digest import digest_blocks, digest_text
from storage import metrics
from storage.metrics.digest import compute_digest
from storage.models import AuditEvent
from tests.harness import (
    CONFIG,
    GITHUB_TOKEN,
    all_text,
    config_on,
    deployed,
    header_text,
    production_dispatches,
    recorded_dispatch,
    seed,
    valid_record,
    verified,
)

ROOT = Path(__file__).resolve().parent.parent
PATCH = "9b1e0d4"
REASON = "CVE-2026-1234 remote code execution in the request parser"
# production is frozen (the window gate refuses every normal promotion) and expedite is configured
EXPEDITE = CONFIG.replace(
    "    timezone: Europe/Berlin\n",
    "    timezone: Europe/Berlin\n"
    '    freezes: [{start: "2020-01-01T00:00", end: "2099-01-01T00:00", reason: "year-end freeze"}]\n',
).replace(
    "policy:\n",
    "policy:\n  expedite:\n    approvers: [U0ONCALL, U0SRE2, S0RELEASE]\n    required_approvals: 2\n    approval_ttl: 1h\n",
)
SKIPPABLE = {"no_skipped_environment", "soak_time", "deployment_window"}


async def reply_to(h, user: str, command: str, text: str) -> dict:
    person = h.user(user)
    await person.command(command, text)
    return (await h.wait(lambda s: person.replies()))[0]


def gate_lines(reply: dict) -> dict[str, str]:
    """Gate title → its line, from a reply's blocks."""
    out = {}
    for line in all_text(reply).splitlines():
        for title in ("No skipped environment", "Soak time", "Deployment window", "Previous environment verified"):
            if f"*{title}*" in line:
                out[title] = line
        if "*Vulnerabilities*" in line:
            out["Vulnerabilities"] = line
    return out


async def test_expedite_is_off_unless_configured(harness):
    h = harness
    await seed(h, tag=PATCH, envs=("dev",))
    reply = all_text(await reply_to(h, "U0DEV", "/promote", f"api-gateway {PATCH} --expedite {REASON}"))
    assert "Expedited promotion is off" in reply and "policy.expedite" in reply
    assert production_dispatches(h) == [] and h.cards() == []


@pytest.mark.parametrize("config_text", [EXPEDITE])
async def test_an_expedited_security_patch_skips_staging_soak_and_window_with_more_approvals(
    harness, database_url, tmp_path
):
    h = harness
    build = await seed(h, tag=PATCH, envs=("dev",))  # the patch is verified in dev only

    # a reason is required; the parse names the form
    assert "needs a reason" in all_text(await reply_to(h, "U0ONCALL", "/promote", f"api-gateway {PATCH} --expedite"))

    # the normal path is refused three times over: staging skipped, no soak, production frozen
    normal = gate_lines(await reply_to(h, "U0ONCALL", "/promote", f"api-gateway {PATCH} to production --check"))
    for title in ("No skipped environment", "Soak time", "Deployment window"):
        assert ":x:" in normal[title], normal[title]

    # the expedited check: those three are skipped, shown with the reason; previous environment verified
    # is checked in dev, where the patch actually comes from
    check = await reply_to(h, "U0ONCALL", "/promote", f"api-gateway {PATCH} --check --expedite {REASON}")
    lines = gate_lines(check)
    assert "is eligible as an *EXPEDITED* promotion from dev" in all_text(check)
    for title in ("No skipped environment", "Soak time", "Deployment window"):
        assert ":fast_forward:" in lines[title] and "skipped for expedite" in lines[title], lines[title]
    assert "staging is skipped" in lines["No skipped environment"]
    assert (
        ":white_check_mark:" in lines["Previous environment verified"]
        and "deployed to dev" in lines["Previous environment verified"]
    )

    # the eligibility API and `promobot check` agree
    status, report = await h.get(
        f"/api/v1/eligibility?service=api-gateway&tag={PATCH}&environment=production&expedite=CVE-2026-1234"
    )
    assert status == 200 and report["eligible"] is True and report["source_environment"] == "dev"
    assert report["expedite"] == {"reason": "CVE-2026-1234", "skipped_environments": ["staging"]}
    assert {g["gate"] for g in report["gates"] if g["status"] == "skipped"} == SKIPPABLE
    status, blank = await h.get(f"/api/v1/eligibility?service=api-gateway&tag={PATCH}&expedite=%20")
    assert status == 400 and "expedite" in blank["problems"][0]
    status, normal_report = await h.get(f"/api/v1/eligibility?service=api-gateway&tag={PATCH}&environment=production")
    assert normal_report["eligible"] is False and not [g for g in normal_report["gates"] if g["status"] == "skipped"]
    config_file = tmp_path / "promobot.yml"
    config_file.write_text(config_on(h.registry_host, EXPEDITE))
    cli = subprocess.run(
        [sys.executable, "-m", "bot.cli", "check", "api-gateway", PATCH, "--env", "production", "--expedite", REASON],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "SLACK_"))},
            "PROMOBOT_CONFIG": str(config_file),
            "DATABASE_URL": database_url,
            "GITHUB_TOKEN": GITHUB_TOKEN,
            "GITHUB_API_URL": h.github.api_url,
        },
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"→ production: ELIGIBLE (EXPEDITED from dev: {REASON})" in cli.stdout
    assert "[SKIP] Soak time: skipped for expedite" in cli.stdout

    # the request: a card that says EXPEDITED, the skipped gates and the reason
    reply = await reply_to(h, "U0ONCALL", "/promote", f"api-gateway {PATCH} --expedite {REASON}")
    assert "EXPEDITED promotion" in reply["text"] and "waiting for 2 approval(s)" in reply["text"]
    card = h.cards()[-1]
    assert header_text(card) == "EXPEDITED promotion: api-gateway → production · Waiting for approval"
    text = all_text(card)
    assert REASON in text and "*Skipped gates*: No skipped environment, Soak time, Deployment window" in text
    assert "from dev, skipping staging" in text and "0 of 2" in text
    # only the expedite approvers are asked (U0LEAD approves production normally, not expedites)
    dms = {m["channel"] for m in h.slack.messages() if m["channel"].startswith("U")}
    assert dms == {"U0SRE2", "U0RM1", "U0RM2"}  # U0ONCALL asked, so is not asked to approve

    # the requester never approves; production's own approver does not count here
    for user, says in (("U0ONCALL", "cannot approve"), ("U0LEAD", "only the policy.expedite approvers count")):
        person = h.user(user)
        await person.click(card, "promotion.approve")
        assert says in (await h.wait(lambda s, p=person: p.replies()))[0]["text"]
    await h.user("U0SRE2").click(card, "promotion.approve")
    await h.wait(lambda s: any("approved (1 of 2)" in m["text"] for m in s.messages("C0DEPLOYS")))
    assert production_dispatches(h) == []
    await h.user("U0RM1").click(card, "promotion.approve")  # a member of the S0RELEASE group
    dispatch = await recorded_dispatch(h)
    assert dispatch["inputs"]["image_tag"] == PATCH and dispatch["inputs"]["image_digest"] == build["digest"]
    pid = dispatch["inputs"]["promotion_id"]

    assert (await h.event(deployed("api-gateway", PATCH, "production", run_id=str(dispatch["run_id"]))))[0] == 202
    assert (await h.event(verified("api-gateway", PATCH, "production")))[0] == 202
    await h.wait(
        lambda s: any(
            "EXPEDITED promotion: api-gateway → production · Verified" in header_text(u) for u in s.updates("C0DEPLOYS")
        )
    )

    # the record, the audit trail, the metrics and the digest all say it was expedited
    status, record = await h.get(f"/api/v1/promotions/{pid}")
    valid_record(record)
    assert record["status"] == "SUCCESS" and record["expedited"] is True and record["expedite_reason"] == REASON
    assert record["source_environment"] == "dev" and record["verification_results"] == {
        "dev": "PASSED",
        "production": "PASSED",
    }
    assert record["approvers"] == ["U0SRE2", "U0RM1"] and record["approver"] == "U0RM1"
    with Session(h.bot.engine) as s:
        events = {e.action: e.detail for e in s.exec(select(AuditEvent).where(AuditEvent.promotion_id == pid))}
    assert events["promotion.requested"]["expedited"] is True
    assert events["promotion.requested"]["expedite"] == {"reason": REASON, "skipped_environments": ["staging"]}
    assert events["promotion.approved"]["expedited"] is True

    with Session(h.bot.engine) as s:
        end = datetime.now(UTC) + timedelta(minutes=1)
        report_ = metrics.compute(s, start=end - timedelta(days=1), end=end)
        listing = metrics.expedited_promotions(s, start=end - timedelta(days=1), end=end)
    production = next(m for m in report_.promotions if m.environment == "production")
    assert (production.completed, production.expedited) == (1, 1)
    assert listing.total == 1 and listing.items[0].reason == REASON and listing.items[0].source_environment == "dev"
    with Session(h.bot.engine) as s:
        digest = compute_digest(
            s,
            digest=DigestConfig(channel="C0METRICS", schedule="0 9 * * mon-fri"),
            environments=h.bot.config.environment_names,
            end=end,
        )
    posted = "\n".join(json.dumps(b.to_dict(), ensure_ascii=False) for b in digest_blocks(digest))
    assert "Expedited promotions (1)" in posted and "CVE-2026-1234" in posted and "dev → production" in posted
    assert "1 of 1 ended (critical security patches)" in posted and "1 expedited" in digest_text(digest)
    async with h.session.get(f"{h.base_url}/metrics") as resp:
        scrape = await resp.text()
    assert (
        'promobot_expedited_promotions_total{environment="production",service="api-gateway",status="verified"} 1.0'
        in scrape
    )


@pytest.mark.parametrize("config_text", [EXPEDITE])
async def test_an_expedite_never_skips_the_artifact_security_lock_or_hold_gates(harness):
    h = harness
    # a patch that itself carries critical vulnerabilities is refused, expedited or not
    await seed(h, tag=PATCH, envs=("dev",), scan="trivy/trivy-alpine-3.9-high-critical.json")
    reply = await reply_to(h, "U0ONCALL", "/promote", f"api-gateway {PATCH} --expedite {REASON}")
    lines = gate_lines(reply)
    assert ":x:" in lines["Vulnerabilities"] and "CRITICAL" in lines["Vulnerabilities"]
    assert "Skipped for expedite: No skipped environment, Soak time, Deployment window" in all_text(reply)
    assert h.cards() == []

    # a clean patch, but production is locked, and then the artifact is on hold: both still refuse
    await seed(h, tag="4c5d6e7", envs=("dev",))
    await reply_to(h, "U0DEV", "/promote", "lock api-gateway production incident INC-9")
    locked = all_text(await reply_to(h, "U0ONCALL", "/promote", f"api-gateway 4c5d6e7 --expedite {REASON}"))
    assert "Environment lock" in locked and "incident INC-9" in locked
    await reply_to(h, "U0LEAD", "/promote", "unlock api-gateway production")
    await reply_to(h, "U0DEV", "/promote", "hold api-gateway 4c5d6e7 bad migration")
    held = all_text(await reply_to(h, "U0ONCALL", "/promote", f"api-gateway 4c5d6e7 --expedite {REASON}"))
    assert "Artifact hold" in held and "bad migration" in held
    # a mutable tag or an unknown digest is never expedited either
    latest = all_text(await reply_to(h, "U0ONCALL", "/promote", f"api-gateway latest --expedite {REASON}"))
    assert "Immutable tag" in latest and "mutable tag" in latest
    assert h.cards() == [] and production_dispatches(h) == []
    # nothing was requested: every refusal is on the audit trail with its expedite
    with Session(h.bot.engine) as s:
        refused = [
            e.detail
            for e in s.exec(
                select(AuditEvent).where(AuditEvent.action == "promotion.refused", AuditEvent.actor == "U0ONCALL")
            )
        ]
    assert len(refused) == 4 and all(d["expedited"] is True and d["expedite"]["reason"] == REASON for d in refused)
    assert json.dumps(refused)  # the evidence survives the audit log
