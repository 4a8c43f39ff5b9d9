"""Exactly one dispatch per approved promotion, also when the bot is killed (SIGKILL) on the
way and started again: real `promobot serve` processes on one database."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import sqlalchemy as sa

from tests.bot_process import BotProcess
from tests.harness import (
    TAG,
    Clock,
    Harness,
    process_config,
    production_dispatches,
    request_card,
    seed,
    verified,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def processes(tmp_path, database_url, slack, github, image_registry):
    config = tmp_path / "promobot.yml"
    config.write_text(process_config(image_registry.host))
    started: list[BotProcess] = []

    def start(instance_id: str = "replica-a", *, named: bool = True) -> BotProcess:
        """``named=False``: no PROMOBOT_INSTANCE_ID (a Kubernetes Deployment's pods get new names on restart)."""
        bot = BotProcess(
            config_path=config,
            database_url=database_url,
            slack=slack,
            github=github,
            instance_id=instance_id if named else "",
            log_path=tmp_path / f"{instance_id}.log",
            registry_host=image_registry.host,
        ).start()
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.stop()


async def _harness(bot: BotProcess, slack, github, session) -> Harness:
    return Harness(bot.url, slack, github, None, session, Clock(), registry_host=bot.registry_host)


def _promotion(database_url: str, promotion_id: str) -> dict:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT status, pipeline_run_id FROM promotion WHERE id = :id"), {"id": promotion_id}
            ).one()
            actions = [
                r[0]
                for r in conn.execute(
                    sa.text("SELECT action FROM auditevent WHERE promotion_id = :id ORDER BY seq"), {"id": promotion_id}
                )
            ]
            outbox = conn.execute(
                sa.text("SELECT status, attempts FROM outboxentry WHERE promotion_id = :id"), {"id": promotion_id}
            ).one()
    finally:
        engine.dispose()
    return {"status": row[0], "run_id": row[1], "actions": actions, "outbox": tuple(outbox)}


def production_promotion_id(database_url: str) -> str:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT id FROM promotion WHERE target_environment = 'production'")
            ).scalar_one()
    finally:
        engine.dispose()


async def test_killed_while_github_was_answering_the_dispatch(processes, slack, github, database_url):
    github.dispatch_delay = 5.0  # GitHub records the dispatch, then is slow to answer
    bot = processes("replica-a")
    async with aiohttp.ClientSession() as session:
        h = await _harness(bot, slack, github, session)
        await seed(h)
        await request_card(h)
        await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
        dispatch = (await h.wait(lambda s: production_dispatches(h), timeout=20))[0]
        bot.kill()  # before the bot heard back: it cannot know whether the dispatch went through
        github.dispatch_delay = 0.0

        processes("replica-a")  # the same instance, started again
        pid = dispatch["inputs"]["promotion_id"]
        for _ in range(150):
            state = _promotion(database_url, pid)
            if state["status"] == "dispatched":
                break
            await asyncio.sleep(0.1)
    assert state["status"] == "dispatched", state
    assert len(production_dispatches(h)) == 1  # reconciled against the runs list, not repeated
    assert state["run_id"] == str(dispatch["run_id"])
    assert state["actions"].count("dispatch.sent") == 1
    assert state["outbox"][0] == "done" and state["outbox"][1] == 2


async def test_killed_right_after_acknowledging_the_approval(processes, slack, github, database_url):
    bot = processes("replica-a")
    async with aiohttp.ClientSession() as session:
        h = await _harness(bot, slack, github, session)
        await seed(h)
        await request_card(h)
        github.fail_next(count=1000, status=502)  # nothing after the approval can reach GitHub
        resp = await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
        assert resp.status == 200  # Slack was told "ok": the approval must not be lost
        bot.kill()
        github.reset()
        processes("replica-a")
        dispatch = (await h.wait(lambda s: production_dispatches(h), timeout=30))[0]
    state = _promotion(database_url, dispatch["inputs"]["promotion_id"])
    assert state["actions"][:3] == ["promotion.requested", "promotion.approval", "promotion.approved"]
    assert len(production_dispatches(h)) == 1


async def test_killed_while_github_was_failing_then_recovers(processes, slack, github, database_url):
    bot = processes("replica-a")
    async with aiohttp.ClientSession() as session:
        h = await _harness(bot, slack, github, session)
        await seed(h)
        await request_card(h)
        github.fail_next(count=1000, status=502, path_contains="/dispatches")
        await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
        await h.wait(
            lambda s: [r for r in github.requests() if r["path"].endswith("/dispatches") and r["status"] == 502],
            timeout=20,
        )
        pid = production_promotion_id(database_url)
        for _ in range(100):  # the failure is on record (GitHub's answer alone is not)
            if "dispatch.retry_scheduled" in _promotion(database_url, pid)["actions"]:
                break
            await asyncio.sleep(0.05)
        bot.kill()
        github.reset()  # GitHub recovers while the bot is down

        processes("replica-a")
        dispatch = (await h.wait(lambda s: production_dispatches(h), timeout=30))[0]
        pid = dispatch["inputs"]["promotion_id"]
        for _ in range(100):
            state = _promotion(database_url, pid)
            if state["status"] == "dispatched":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
    assert state["status"] == "dispatched", state
    assert len(production_dispatches(h)) == 1
    assert state["actions"].count("dispatch.sent") == 1
    assert "dispatch.retry_scheduled" in _promotion(database_url, pid)["actions"]


async def test_killed_while_the_run_was_deploying(processes, slack, github, database_url):
    bot = processes("replica-a")
    async with aiohttp.ClientSession() as session:
        h = await _harness(bot, slack, github, session)
        await seed(h)
        await request_card(h)
        await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
        dispatch = (await h.wait(lambda s: production_dispatches(h), timeout=20))[0]
        pid = dispatch["inputs"]["promotion_id"]
        for _ in range(100):
            if _promotion(database_url, pid)["status"] == "dispatched":
                break
            await asyncio.sleep(0.1)
        bot.kill()
        github.complete_run(dispatch["run_id"], "success")  # the run ends while promobot is down: no webhook

        h = await _harness(processes("replica-a"), slack, github, session)  # tracked runs resume from the database
        for _ in range(100):
            if _promotion(database_url, pid)["status"] == "deployed":
                break
            await asyncio.sleep(0.1)
        assert (await h.event(verified("api-gateway", TAG, "production")))[0] == 202
        state = _promotion(database_url, pid)
    assert state["status"] == "verified", state
    assert state["actions"] == [
        "promotion.requested",
        "promotion.approval",
        "promotion.approved",
        "dispatch.sent",
        "deployment.finished",
        "verification.finished",
    ]
    assert len(production_dispatches(h)) == 1


def _outbox(database_url: str) -> tuple[str, str | None] | None:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT o.status, o.claimed_by FROM outboxentry o JOIN promotion p ON p.id = o.promotion_id "
                    "WHERE p.target_environment = 'production'"
                )
            ).first()
            return (row[0], row[1]) if row else None
    finally:
        engine.dispose()


async def test_every_unnamed_replica_killed_mid_dispatch_then_one_restarted_dispatches_once_soon(
    processes, slack, github, database_url
):
    a, b = processes("replica-a", named=False), processes("replica-b", named=False)
    async with aiohttp.ClientSession() as session:
        h = await _harness(a, slack, github, session)
        await seed(h)
        await request_card(h)
        # GitHub hangs on "is the commit reachable": the approval's re-check gives up after the gate timeout
        # (the approval stands), and the dispatch's own check hangs while a replica holds the claim
        github.delay_next(30.0, "...main", count=2)  # compare(commit...main): the gate, not the card
        await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
        await h.wait(lambda s: [m for m in s.messages("C0DEPLOYS") if "Approved by <@U0LEAD>" in m["text"]], timeout=20)
        for _ in range(300):
            claim = _outbox(database_url)
            if claim and claim[0] == "in_flight":
                break
            await asyncio.sleep(0.05)
        assert claim and claim[0] == "in_flight" and claim[1], claim  # a replica holds it, named by host and pid
        a.kill()
        b.kill()  # every replica is gone; the claim names a process that will never come back
        github.clear_failures()

        restarted = asyncio.get_running_loop().time()
        processes("replica-c", named=False)
        dispatch = (await h.wait(lambda s: production_dispatches(h), timeout=40))[0]
        recovered_after = asyncio.get_running_loop().time() - restarted
        pid = dispatch["inputs"]["promotion_id"]
        for _ in range(50):
            state = _promotion(database_url, pid)
            if state["status"] == "dispatched":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
    print(f"dispatched {recovered_after:.1f} s after the restart")
    assert recovered_after < 30.0
    assert state["status"] == "dispatched", state
    assert len(production_dispatches(h)) == 1
    assert state["actions"].count("dispatch.sent") == 1
