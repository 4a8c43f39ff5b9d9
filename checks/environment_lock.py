"""Environment lock: a person has stopped every promotion into this environment."""

from __future__ import annotations

from checks.base import Gate, GateContext, GateResult


async def _evaluate(ctx: GateContext) -> GateResult:
    lock = ctx.ledger.lock(ctx.service, ctx.target_environment)
    if lock is None:
        return GATE.passed(f"{ctx.target_environment} is not locked for {ctx.service}")
    return GATE.failed(
        f"{ctx.service} in {ctx.target_environment} was locked by <@{lock.locked_by}> "
        f"at {lock.locked_at:%Y-%m-%d %H:%M} UTC: {lock.reason}",
        f"Ask <@{lock.locked_by}> or run `/promote unlock {ctx.service} {ctx.target_environment}` once it is safe.",
        locked_by=lock.locked_by,
        locked_at=lock.locked_at.isoformat(),
        lock_reason=lock.reason,
    )


GATE = Gate(name="environment_lock", title="Environment lock", evaluate=_evaluate)
