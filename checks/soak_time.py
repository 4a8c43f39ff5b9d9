"""Soak time: the artifact has run verified in the previous environment long enough."""

from __future__ import annotations

from checks.base import Gate, GateContext, GateResult
from bot.config import format_duration


async def _evaluate(ctx: GateContext) -> GateResult:
    need = ctx.environment_config.soak_time
    prev = ctx.source_environment
    if prev is None or need.total_seconds() <= 0:
        return GATE.passed("no soak time required", soak_time=format_duration(need))
    deployments = [d for d in ctx.ledger.deployments(ctx.service, prev, tag=ctx.tag, limit=50) if d.status == "success"]
    passed = [v for v in ctx.ledger.verifications(ctx.service, prev, tag=ctx.tag, limit=50) if v.result == "passed"]
    if deployments:
        # soak counts from the first passed verification after the latest deployment
        passed = [v for v in passed if v.finished_at >= deployments[0].finished_at]
    if not passed:
        return GATE.failed(f"`{ctx.tag}` has not been verified in {prev}, so its soak has not started",
                           f"Verify `{ctx.tag}` in {prev}; it becomes eligible {format_duration(need)} later.",
                           environment=prev, soak_time=format_duration(need))
    since = min(v.finished_at for v in passed)
    soaked = ctx.now - since
    if soaked >= need:
        return GATE.passed(f"in {prev} for {format_duration(soaked)} (needs {format_duration(need)})",
                           environment=prev, verified_at=since.isoformat(), soaked=format_duration(soaked))
    eligible_at = since + need
    return GATE.failed(f"in {prev} {format_duration(soaked)} of {format_duration(need)}; "
                       f"eligible at {eligible_at:%Y-%m-%d %H:%M} UTC",
                       f"Wait {format_duration(need - soaked)} and ask again.",
                       environment=prev, verified_at=since.isoformat(), eligible_at=eligible_at.isoformat(),
                       remaining=format_duration(need - soaked))


GATE = Gate(name="soak_time", title="Soak time", evaluate=_evaluate)
