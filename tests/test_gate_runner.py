"""The gate runner: concurrent, each gate under its own timeout, and nothing that breaks ever passes."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from bot.config import parse_config
from checks import runner
from checks.base import Gate, GateContext, GateStatus
from tests.harness import CONFIG


class EmptyLedger:
    def artifact(self, service, tag):
        return None


def context() -> GateContext:
    return GateContext(
        service="api-gateway",
        tag="7a3f9c2",
        target_environment="production",
        source_environment="staging",
        now=datetime.now(UTC),
        config=parse_config(CONFIG),
        ledger=EmptyLedger(),
    )


def gate(name: str, behaviour, timeout: float = 1.0) -> Gate:
    async def evaluate(ctx):
        return await behaviour(GATES[name])

    GATES[name] = Gate(name=name, title=name.replace("_", " ").title(), evaluate=evaluate, timeout=timeout)
    return GATES[name]


GATES: dict[str, Gate] = {}


async def test_broken_and_slow_gates_error_and_block():
    async def passes(g):
        return g.passed("fine")

    async def raises(g):
        raise ConnectionError("registry.example.com: connection refused")

    async def hangs(g):
        await asyncio.sleep(30)

    async def wrong(g):
        return "yes"

    gates = [gate("ok", passes), gate("broken", raises), gate("slow", hangs, timeout=0.3), gate("odd", wrong)]
    started = time.monotonic()
    report = await runner.evaluate(gates, context())
    assert time.monotonic() - started < 2.0
    by_name = {r.gate: r for r in report.results}
    assert [r.gate for r in report.results] == ["ok", "broken", "slow", "odd"]
    assert by_name["ok"].status is GateStatus.PASSED
    assert by_name["broken"].status is GateStatus.ERRORED
    assert "could not verify broken: ConnectionError: registry.example.com" in by_name["broken"].reason
    assert by_name["slow"].status is GateStatus.ERRORED and "no answer within 0.3s" in by_name["slow"].reason
    assert by_name["odd"].status is GateStatus.ERRORED
    assert not report.eligible and len(report.blocking) == 3


async def test_gates_run_at_the_same_time_while_they_wait():
    async def waits(g):
        await asyncio.sleep(0.3)  # a registry or GitHub answering slowly
        return g.passed("done")

    gates = [gate(f"g{i}", waits) for i in range(8)]
    started = time.monotonic()
    report = await runner.evaluate(gates, context())
    elapsed = time.monotonic() - started
    assert report.eligible
    assert elapsed < 0.3 * 8 / 2, f"8 gates of 0.3 s took {elapsed:.2f} s: not concurrent"


async def test_a_gate_that_blocks_its_loop_is_errored_when_its_deadline_passes_and_others_keep_their_answers():
    async def passes(g):
        return g.passed("fine")

    async def hangs_the_thread(g):
        await asyncio.sleep(0.05)  # the others answer first
        time.sleep(3)  # a synchronous call that does not come back: no timeout can interrupt it
        return g.passed("too late")

    loops = runner.GateLoops(1)
    gates = [gate("ok", passes), gate("stuck", hangs_the_thread, timeout=0.5), gate("also_ok", passes)]
    started = time.monotonic()
    report = await runner.evaluate(gates, context(), loops=loops)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + runner.DEADLINE_MARGIN + 0.5, elapsed  # the slowest timeout (1 s) and the margin
    by_name = {r.gate: r for r in report.results}
    assert by_name["ok"].status is GateStatus.PASSED and by_name["also_ok"].status is GateStatus.PASSED
    assert by_name["stuck"].status is GateStatus.ERRORED and "no answer within 0.5s" in by_name["stuck"].reason
    assert not report.eligible


async def test_the_event_loop_that_asks_stays_free_while_gates_work():
    """Evaluations run on the gate loops: the caller's loop keeps answering meanwhile."""

    async def works(g):
        time.sleep(0.2)  # CPU or a blocking read, on the gate loop
        return g.passed("done")

    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await runner.evaluate([gate(f"w{i}", works) for i in range(4)], context())
    task.cancel()
    assert ticks >= 20, f"the asking loop ticked {ticks} times in 0.8 s of gate work"


async def test_no_gates_is_not_eligible():
    assert not (await runner.evaluate([], context())).eligible


def test_overnight_windows_run_into_the_next_morning():
    from checks.deployment_window import in_window

    env = parse_config(
        CONFIG.replace(
            "    timezone: Europe/Berlin\n", "    timezone: Europe/Berlin\n    windows: ['fri 22:00-06:00']\n"
        )
    ).environment("production")
    berlin = env.zone
    assert in_window(env, datetime(2026, 11, 27, 23, 0, tzinfo=berlin))  # Friday night
    assert in_window(env, datetime(2026, 11, 28, 5, 59, tzinfo=berlin))  # Saturday morning
    assert not in_window(env, datetime(2026, 11, 28, 6, 0, tzinfo=berlin))
    assert not in_window(env, datetime(2026, 11, 27, 5, 0, tzinfo=berlin))  # Friday morning: Thursday is closed
