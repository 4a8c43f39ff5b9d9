"""What operators scrape and probe: /metrics for Prometheus and /healthz."""

from __future__ import annotations

from tests.harness import TAG, deployed, production_dispatches, request_card, seed, verified


async def _text(h, path: str) -> tuple[int, str, str]:
    async with h.session.get(f"{h.base_url}{path}") as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_metrics_count_promotions_by_outcome_and_time_approvals(harness):
    h = harness
    await seed(h)
    await request_card(h)
    await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
    dispatch = (await h.wait(lambda s: production_dispatches(h)))[0]
    await h.wait(lambda s: [u for u in s.updates("C0DEPLOYS") if "production · Deploying" in str(u["blocks"][0])])
    assert (await h.event(deployed("api-gateway", TAG, "production", run_id=str(dispatch["run_id"]))))[0] == 202
    assert (await h.event(verified("api-gateway", TAG, "production")))[0] == 202
    await h.wait(lambda s: [u for u in s.updates("C0DEPLOYS") if "production · Verified" in str(u["blocks"][0])])
    h.bot.service.clock.fixed = None
    status, content_type, body = await _text(h, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    lines = [line for line in body.splitlines() if not line.startswith("#")]
    verified_line = [
        line
        for line in lines
        if line.startswith("promobot_promotions_total")
        and 'environment="production"' in line
        and 'status="verified"' in line
    ]
    assert verified_line and verified_line[0].endswith(" 1.0"), verified_line
    assert any(
        line.startswith("promobot_approval_duration_seconds_count")
        and 'environment="production"' in line
        and line.endswith(" 1.0")
        for line in lines
    )


async def test_healthz_answers_when_the_database_does(harness):
    status, _, body = await _text(harness, "/healthz")
    assert status == 200 and '"ok"' in body
