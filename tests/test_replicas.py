"""Two real `promobot serve` processes on one PostgreSQL, behind a load balancer that hands both of
them the same clicks and the same webhook delivery: one dispatch, one recorded outcome, one audit trail."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest
import sqlalchemy as sa

from tests.bot_process import BotProcess
from tests.github_webhooks import deliver, workflow_run
from tests.harness import (
    TAG,
    Clock,
    Harness,
    database_kind,
    process_config,
    production_dispatches,
    request_card,
    seed,
    verified,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def replicas(tmp_path, database_url, slack, github, image_registry):
    if database_kind() != "postgres":
        pytest.skip("replicas share a PostgreSQL database (PROMOBOT_TEST_DATABASE=postgres)")
    config = tmp_path / "promobot.yml"
    config.write_text(process_config(image_registry.host))
    bots = [
        BotProcess(
            config_path=config,
            database_url=database_url,
            slack=slack,
            github=github,
            instance_id=name,
            log_path=tmp_path / f"{name}.log",
            registry_host=image_registry.host,
        )
        for name in ("replica-a", "replica-b")
    ]
    with ThreadPoolExecutor() as pool:  # started together: both migrate the same fresh schema at once
        list(pool.map(BotProcess.start, bots))
    yield bots
    for bot in bots:
        bot.stop()


def _state(database_url: str, promotion_id: str) -> tuple[str, list[str], bool]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            status = conn.execute(sa.text("SELECT status FROM promotion WHERE id = :id"), {"id": promotion_id}).scalar()
            actions = [
                r[0]
                for r in conn.execute(
                    sa.text("SELECT action FROM auditevent WHERE promotion_id = :id ORDER BY seq"), {"id": promotion_id}
                )
            ]
            chain = conn.execute(sa.text("SELECT seq, prev_hash, hash FROM auditevent ORDER BY seq")).all()
        # one linear chain: no gap, no fork, although two processes appended to it
        intact = all(b.seq == a.seq + 1 and b.prev_hash == a.hash for a, b in zip(chain, chain[1:]))
    finally:
        engine.dispose()
    return status, actions, intact


async def _until(database_url: str, promotion_id: str, status: str, timeout: float = 10.0) -> list[str]:
    for _ in range(int(timeout / 0.1)):
        state = _state(database_url, promotion_id)
        if state[0] == status:
            return state[1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{promotion_id} is {state[0]}, not {status}: {state[1]}")


async def test_two_replicas_get_the_same_clicks_and_webhook_and_act_once(replicas, slack, github, database_url):
    a, b = replicas
    async with aiohttp.ClientSession() as session:
        ha, hb = (
            Harness(bot.url, slack, github, None, session, Clock(), registry_host=bot.registry_host) for bot in (a, b)
        )
        await seed(ha)
        await request_card(ha)
        card = ha.cards()[-1]
        await asyncio.gather(
            *(h.user(u).click(card, "promotion.approve") for h in (ha, hb) for u in ("U0LEAD", "U0RM1"))
        )
        dispatch = (await ha.wait(lambda s: production_dispatches(ha), timeout=20))[0]
        pid = dispatch["inputs"]["promotion_id"]
        await _until(database_url, pid, "dispatched")

        github.complete_run(dispatch["run_id"], "success")
        run = next(r for r in github.runs() if r["id"] == dispatch["run_id"])
        answers = await asyncio.gather(
            *(deliver(session, bot.url, workflow_run(run), delivery="delivery-42") for bot in (a, b))
        )
        # one replica took the delivery; the other saw it was taken (both replicas' polls may have got there first)
        assert sorted(answer["status"] for _, answer in answers)[0] == "duplicate"
        assert {answer["status"] for _, answer in answers} - {"duplicate"} <= {"recorded", "ignored"}
        await _until(database_url, pid, "deployed")
        assert (await ha.event(verified("api-gateway", TAG, "production")))[0] == 202
        actions = await _until(database_url, pid, "verified")
        await asyncio.sleep(1.0)  # both replicas' outbox and tracking passes run meanwhile

    assert len(production_dispatches(ha)) == 1
    _status, final, intact = _state(database_url, pid)
    assert final == actions and intact
    approvals = [x for x in actions if x == "promotion.approval"]
    assert actions == [
        "promotion.requested",
        *approvals,
        "promotion.approved",
        "dispatch.sent",
        "deployment.finished",
        "verification.finished",
    ]
    assert 1 <= len(approvals) <= 2  # each approver once; the second may land before the dispatch
    replies = [m["text"] for m in slack.messages("C0DEPLOYS") if m.get("thread_ts") == card["ts"]]
    assert sum(t.startswith("Approved by") for t in replies) == 1
    assert sum(t == "Deployed; waiting for verification." for t in replies) == 1
