"""Scenarios in which exactly one gate refuses: the Slack answer names that gate, its evidence
and the next step, and no approval card is posted."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.harness import CONFIG, TAG, ago, all_text, request_card, seed, verified


def only_refusal(reply: dict, title: str) -> str:
    text = all_text(reply)
    assert re.search(r"Cannot promote \*api-gateway\* `7a3f9c2` to \*production\*: 1 of \d+ gates refused", text), text
    assert f":x: *{title}*" in text or f":warning: *{title}*" in text, text
    return text


async def test_soak_time_alone(harness):
    h = harness
    await seed(h)  # staging verified 7 hours ago
    h.clock.fixed = datetime.now(UTC) - timedelta(hours=7) + timedelta(minutes=10)
    text = only_refusal((await request_card(h)).replies()[0], "Soak time")
    assert "in staging 10m of 1h; eligible at" in text and re.search(r"Wait (49|50)m and ask again", text)
    assert h.cards() == []


async def test_licenses_alone(harness):
    h = harness
    await seed(h)
    sbom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "components": [
            {"type": "library", "name": "left-pad", "version": "1.3.0", "licenses": [{"license": {"id": "MIT"}}]},
            {
                "type": "library",
                "name": "ghostscript",
                "version": "10.0",
                "licenses": [{"license": {"id": "AGPL-3.0-only"}}],
            },
        ],
    }
    status, body = await h.event(
        {"type": "sbom.published", "service": "api-gateway", "tag": TAG, "format": "cyclonedx", "sbom": sbom}
    )
    assert status == 202, body
    text = only_refusal((await request_card(h)).replies()[0], "Licenses")
    assert "ghostscript" in text and "AGPL-3.0-only" in text
    assert h.cards() == []


async def test_environment_lock_alone(harness):
    h = harness
    await seed(h)
    lead = h.user("U0LEAD")
    await lead.command("/promote", "lock api-gateway production payment provider incident")
    await h.wait(lambda s: lead.replies())
    text = only_refusal((await request_card(h)).replies()[0], "Environment lock")
    assert "locked by <@U0LEAD>" in text and "payment provider incident" in text
    assert "/promote unlock api-gateway production" in text


async def test_source_commit_reachable_alone(harness):
    h = harness
    await seed(h)
    h.github.add_repo("acme/api-gateway")  # the history was rewritten: the build's commit is gone
    h.github.add_workflow("acme/api-gateway", "deploy.yml")
    h.github.add_commits("acme/api-gateway", "main", ["b" * 40])
    text = only_refusal((await request_card(h)).replies()[0], "Source commit reachable")
    assert f"commit {TAG}" in text and "does not exist in acme/api-gateway" in text


async def test_previous_environment_recent_failure_alone(harness):
    h = harness
    await seed(h)  # staging: deployed 7.5 h ago, verified 7 h ago
    for result, hours in (("failed", 6.5), ("passed", 6)):
        status, _ = await h.event(verified("api-gateway", TAG, "staging", result, finished_at=ago(hours=hours)))
        assert status == 202
    text = only_refusal((await request_card(h)).replies()[0], "Previous environment verified")
    assert "failed verification in staging" in text and "before passing again" in text


@pytest.mark.parametrize(
    "config_text",
    [
        CONFIG.replace(
            "    timezone: Europe/Berlin\n",
            "    timezone: Europe/Berlin\n    freezes: [{start: '2026-01-01T00:00:00', end: '2099-01-05T00:00:00', "
            "reason: year-end freeze}]\n",
        )
    ],
)
async def test_deployment_freeze_alone(harness):
    h = harness
    await seed(h)
    text = only_refusal((await request_card(h)).replies()[0], "Deployment window")
    assert "production is frozen until 2099-01-05T00:00:00 (year-end freeze); next opening" in text
