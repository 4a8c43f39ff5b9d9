"""Soak is measured on promobot's clock: from when promobot recorded the passing verification. The
``finished_at`` a pipeline reports is shown, but a backdated one never shortens the soak."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.harness import TAG, all_text, deployed, header_text, seed, verified


async def reply_to(h, user: str, command: str, text: str) -> dict:
    person = h.user(user)
    await person.command(command, text)
    return (await h.wait(lambda s: person.replies()))[0]


async def gate_one_run(h) -> str:
    """The run of gate 1's staging deploy, once promobot follows it: its reports name it, as a real run's do."""
    await h.wait(lambda s: [u for u in s.updates("C0DEPLOYS") if "→ staging · Deploying" in header_text(u)])
    dispatch = next(d for d in h.github.dispatches() if d["inputs"]["environment"] == "staging")
    return str(dispatch["run_id"])


async def test_a_backdated_finished_at_does_not_shorten_the_soak(harness):
    h = harness
    await seed(h, envs=("dev",))
    run_id = await gate_one_run(h)
    # the pipeline reports staging's deployment and verification just now, claiming they finished hours ago
    claimed = datetime.now(UTC) - timedelta(hours=3)
    for event in (
        deployed(
            "api-gateway", TAG, "staging", run_id=run_id, finished_at=(claimed - timedelta(minutes=10)).isoformat()
        ),
        verified("api-gateway", TAG, "staging", finished_at=claimed.isoformat()),
    ):
        status, answer = await h.event(event)
        assert status == 202, answer

    check = all_text(await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG} to production --check"))
    soak = next(line for line in check.splitlines() if "*Soak time*" in line)
    assert ":x:" in soak and "0m of 1h" in soak, soak  # not "in staging for 3h"
    assert "the pipeline reported it finished at" in soak, soak  # the claimed time is shown, not counted

    status = all_text(await reply_to(h, "U0DEV", "/status", "api-gateway"))
    assert "soak 0m of 1h" in status and "eligible for production now" not in status, status


async def test_the_soak_ends_an_hour_after_promobot_recorded_it_and_the_card_shows_both_times(harness):
    h = harness
    await seed(h, envs=("dev",))
    run_id = await gate_one_run(h)
    claimed = datetime.now(UTC) - timedelta(hours=3)
    recorded = datetime.now(UTC)
    for event in (
        deployed(
            "api-gateway", TAG, "staging", run_id=run_id, finished_at=(claimed - timedelta(minutes=10)).isoformat()
        ),
        verified("api-gateway", TAG, "staging", finished_at=claimed.isoformat()),
    ):
        assert (await h.event(event))[0] == 202
    # 50 minutes on promobot's clock: still soaking
    h.clock.fixed = recorded + timedelta(minutes=50)
    early = all_text(await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG} to production"))
    assert "Soak time" in early and re.search(r"in staging 4\dm of 1h", early) and h.cards() == []
    # 62 minutes: the soak is done; the card shows promobot's count and the pipeline's claim
    h.clock.fixed = recorded + timedelta(minutes=62)
    reply = await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG} to production")
    assert "Requested promotion" in reply["text"], reply["text"]
    card = all_text(h.cards()[-1])
    soak = next(line for line in card.splitlines() if "in staging (needs 1h)" in line)
    assert soak.startswith(":white_check_mark: 1h 1m in staging") and "the pipeline reported" in soak, soak
    gate = next(line for line in card.splitlines() if "*Soak time*" in line)
    assert "in staging for 1h 1m (needs 1h)" in gate and "when promobot recorded the verification" in gate
