"""Evaluate gates concurrently, each under its own timeout.

A gate that raises or runs out of time is *errored*, never passed: the runner
is the one place that guarantees "could not verify" blocks.

Each gate runs on its own worker thread, on that thread's event loop (made
once per thread, not per gate): gates read the ledger through blocking
database calls and some parse large reports, and neither may hold up the
other gates or the bot's event loop. The gates of one evaluation share one
view of the evidence (``checks.evidence``): each question is asked once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from checks.base import Gate, GateContext, GateReport, GateResult, GateStatus
from checks.evidence import SharedLedger, SharedRegistry

log = logging.getLogger(__name__)


_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="gate")


_THREAD = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    """This worker thread's event loop, made on its first gate and kept: a loop made and torn down per
    gate cost more than most gates."""
    loop = getattr(_THREAD, "loop", None)
    if loop is None or loop.is_closed():
        loop = _THREAD.loop = asyncio.new_event_loop()
    return loop


def _in_thread(gate: Gate, ctx: GateContext) -> GateResult:
    # The thread's own deadline cancels the gate's awaits even if nobody waits any more.
    return _thread_loop().run_until_complete(asyncio.wait_for(gate.evaluate(ctx), timeout=gate.timeout))


async def _run_one(gate: Gate, ctx: GateContext) -> GateResult:
    if gate.preset is not None:  # off by configuration or skipped for expedite: shown, not evaluated
        return gate.preset
    try:
        future = asyncio.get_running_loop().run_in_executor(_POOL, _in_thread, gate, ctx)
        result = await asyncio.wait_for(future, timeout=gate.timeout + 0.5)
    except TimeoutError:
        return gate.errored(
            f"could not verify {gate.title.lower()}: no answer within {gate.timeout:g}s", timeout_seconds=gate.timeout
        )
    except Exception as exc:  # a broken evidence source must block, not crash the request
        log.warning("gate %s errored: %s", gate.name, type(exc).__name__, exc_info=True)
        return gate.errored(f"could not verify {gate.title.lower()}: {type(exc).__name__}: {exc}")
    if not isinstance(result, GateResult) or result.status not in GateStatus:
        return gate.errored(f"could not verify {gate.title.lower()}: the gate gave no answer")
    return result


async def evaluate(gates: Sequence[Gate], ctx: GateContext) -> GateReport:
    """Run every gate at once and collect the answers in the gates' order."""
    ctx = replace(
        ctx,
        ledger=SharedLedger(ctx.ledger),
        registry=SharedRegistry(ctx.registry) if ctx.registry is not None else None,
    )
    results = await asyncio.gather(*(_run_one(g, ctx) for g in gates))
    artifact = await asyncio.get_running_loop().run_in_executor(_POOL, lambda: ctx.artifact)
    return GateReport(
        service=ctx.service,
        tag=ctx.tag,
        target_environment=ctx.target_environment,
        source_environment=ctx.source_environment,
        digest=artifact.digest if artifact else None,
        evaluated_at=ctx.now,
        results=tuple(results),
        expedite=ctx.expedite,
    )
