"""Soak is measured on promobot's clock: from when promobot recorded the passing verification. The
``finished_at`` a pipeline reports is shown, but a backdated one never shortens the soak."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.harness import TAG, all_text, deployed, header_text, seed, verified


async def reply_to(h, user: str, command: str, text: str) -> dict:
    person = h.user(user)
    await person.command(command, text)
    return (await h.wait(lambda s: person.replies()))[0]


async def test_a_backdated_finished_at_does_not_shorten_the_soak(harness):
    h = harness
    await seed(h, envs=("dev",))
    await h.wait(lambda s: [u for u in s.updates("C0DEPLOYS") if "→ staging · Deploying" in header_text(u)])
    # the pipeline reports staging's deployment and verification just now, claiming they finished hours ago
    claimed = datetime.now(UTC) - timedelta(hours=3)
    for event in (
        deployed("api-gateway", TAG, "staging", finished_at=(claimed - timedelta(minutes=10)).isoformat()),
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
