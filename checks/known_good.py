"""Known good (rollbacks only): the artifact was verified in the target environment before."""

from __future__ import annotations

from checks.base import Gate, GateContext, GateResult
from storage.statuses import VerificationResult


async def _evaluate(ctx: GateContext) -> GateResult:
    env = ctx.target_environment
    passed = [
        v
        for v in ctx.ledger.verifications(ctx.service, env, tag=ctx.tag, limit=20)
        if v.result == VerificationResult.PASSED
    ]
    if not passed:
        return GATE.failed(
            f"`{ctx.tag}` was never verified in {env}: it is not a known-good artifact",
            f"Roll back to an artifact that passed verification in {env} "
            f"(`/rollback {ctx.service} in {env}` picks the last one).",
            environment=env,
        )
    return GATE.passed(
        f"`{ctx.tag}` passed verification in {env} at {passed[0].finished_at:%Y-%m-%d %H:%M} UTC",
        environment=env,
        verified_at=passed[0].finished_at.isoformat(),
    )


GATE = Gate(name="known_good", title="Known good", evaluate=_evaluate)
