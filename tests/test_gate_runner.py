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


async def test_gates_run_at_the_same_time_even_when_they_block():
    async def blocking(g):
        time.sleep(0.3)  # a synchronous database call, say
        return g.passed("done")

    gates = [gate(f"g{i}", blocking) for i in range(8)]
    started = time.monotonic()
    report = await runner.evaluate(gates, context())
    elapsed = time.monotonic() - started
    assert report.eligible
    assert elapsed < 0.3 * 8 / 2, f"8 gates of 0.3 s took {elapsed:.2f} s: not concurrent"


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
