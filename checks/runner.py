"""Evaluate gates concurrently, each under its own timeout.

A gate that raises or runs out of time is *errored*, never passed: the runner
is the one place that guarantees "could not verify" blocks.

Evaluations run on the gate loops: a few event loops, each on a thread of its
own, never the bot's event loop, which must stay free to acknowledge Slack
within its three seconds. On a gate loop the gates of an evaluation run at the
same time, and many evaluations interleave while they wait on registries and
GitHub. The gates of one evaluation share one view of the evidence
(``checks.evidence``): each question is asked once, so the blocking reads a
gate makes are few and short. A gate that blocks its loop past every
deadline (a hung synchronous call) cannot hold up the answer: the caller
stops waiting, and every gate that had not answered is errored.

(A gate per worker thread, the design before, let 13 threads per check
contend for the interpreter with the event loop: under 50 concurrent checks,
Slack's acknowledgements waited behind them.)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from checks.base import Gate, GateContext, GateReport, GateResult, GateStatus
from checks.evidence import SharedLedger, SharedRegistry

log = logging.getLogger(__name__)

DEADLINE_MARGIN = 1.0  # beyond the slowest gate's timeout, before the caller stops waiting for a blocked loop


class GateLoops:
    """A few event loops, each running forever on a daemon thread of its own; evaluations are spread over
    them in turn. Started on first use."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def _started(self) -> list[asyncio.AbstractEventLoop]:
        with self._lock:
            if not self._loops:
                for n in range(self._count):
                    loop = asyncio.new_event_loop()
                    threading.Thread(target=loop.run_forever, name=f"gates-{n}", daemon=True).start()
                    self._loops.append(loop)
            return self._loops

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        loops = self._started()
        return asyncio.run_coroutine_threadsafe(coro, loops[next(self._turn) % len(loops)])


# one loop per core keeps the interpreter's lock for the event loop between turns; at least two, so that a
# loop busy with one evaluation's reads does not hold up every other
LOOPS = GateLoops(max(2, os.cpu_count() or 2))


async def _run_one(gate: Gate, ctx: GateContext, answered: dict[str, GateResult]) -> GateResult:
    result = await _answer(gate, ctx)
    answered[gate.name] = result
    return result


async def _answer(gate: Gate, ctx: GateContext) -> GateResult:
    if gate.preset is not None:  # off by configuration or skipped for expedite: shown, not evaluated
        return gate.preset
    try:
        result = await asyncio.wait_for(gate.evaluate(ctx), timeout=gate.timeout)
    except TimeoutError:
        return _timed_out(gate)
    except Exception as exc:  # a broken evidence source must block, not crash the request
        log.warning("gate %s errored: %s", gate.name, type(exc).__name__, exc_info=True)
        return gate.errored(f"could not verify {gate.title.lower()}: {type(exc).__name__}: {exc}")
    if not isinstance(result, GateResult) or result.status not in GateStatus:
        return gate.errored(f"could not verify {gate.title.lower()}: the gate gave no answer")
    return result


def _timed_out(gate: Gate) -> GateResult:
    return gate.errored(
        f"could not verify {gate.title.lower()}: no answer within {gate.timeout:g}s", timeout_seconds=gate.timeout
    )


async def _evaluate(gates: Sequence[Gate], ctx: GateContext, answered: dict[str, GateResult]) -> GateReport:
    results = await asyncio.gather(*(_run_one(g, ctx, answered) for g in gates))
    return _report(ctx, tuple(results))


def _report(ctx: GateContext, results: tuple[GateResult, ...]) -> GateReport:
    artifact = ctx.artifact
    return GateReport(
        service=ctx.service,
        tag=ctx.tag,
        target_environment=ctx.target_environment,
        source_environment=ctx.source_environment,
        digest=artifact.digest if artifact else None,
        evaluated_at=ctx.now,
        results=results,
        expedite=ctx.expedite,
    )


async def evaluate(gates: Sequence[Gate], ctx: GateContext, *, loops: GateLoops = LOOPS) -> GateReport:
    """Run every gate at once, on a gate loop, and collect the answers in the gates' order."""
    ctx = replace(
        ctx,
        ledger=SharedLedger(ctx.ledger),
        registry=SharedRegistry(ctx.registry) if ctx.registry is not None else None,
    )
    answered: dict[str, GateResult] = {}
    future = loops.submit(_evaluate(gates, ctx, answered))
    deadline = max((g.timeout for g in gates if g.preset is None), default=0.0) + DEADLINE_MARGIN
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout=deadline)
    except TimeoutError:
        # the loop is blocked (a gate's synchronous call hangs): what answered stands, the rest errored
        future.cancel()
        stuck = [g.name for g in gates if g.name not in answered]
        log.error("gates %s blocked their loop for %.0fs; they are errored", ", ".join(stuck), deadline)
        results = tuple(answered.get(g.name) or _timed_out(g) for g in gates)
        return await asyncio.to_thread(_report, ctx, results)
