"""No skipped environment, no manual override: the tag is what was verified just before."""

from __future__ import annotations

from checks.base import Gate, GateContext, GateResult
from storage.statuses import VerificationResult


async def _evaluate(ctx: GateContext) -> GateResult:
    prev = ctx.source_environment
    if prev is None:
        return GATE.passed(f"{ctx.target_environment} is the first environment")
    verified = ctx.ledger.latest_verified_tag(ctx.service, prev)
    if verified == ctx.tag:
        return GATE.passed(f"`{ctx.tag}` is the artifact verified in {prev}", environment=prev)
    if verified is None:
        # Which environment did the tag reach, if any? Names the skip precisely.
        names = ctx.config.environment_names
        reached = [
            e
            for e in names[: names.index(prev)]
            if any(
                v.result == VerificationResult.PASSED
                for v in ctx.ledger.verifications(ctx.service, e, tag=ctx.tag, limit=5)
            )
        ]
        if reached:
            return GATE.failed(
                f"`{ctx.tag}` was verified in {reached[-1]} but not in {prev}: "
                f"{ctx.target_environment} cannot skip {prev}",
                f"Promote `{ctx.tag}` to {prev} first: `/promote {ctx.service} {ctx.tag} to {prev}`.",
                environment=prev,
                verified_in=reached[-1],
            )
        return GATE.failed(
            f"nothing is verified in {prev}, so nothing can move to {ctx.target_environment}",
            f"Deploy and verify `{ctx.tag}` in {prev} first.",
            environment=prev,
        )
    return GATE.failed(
        f"`{ctx.tag}` is not the artifact verified in {prev}: {prev} runs `{verified}`",
        f"Promote `{verified}` (`/promote {ctx.service} {verified}`), or take `{ctx.tag}` through {prev} first.",
        environment=prev,
        verified_tag=verified,
        requested_tag=ctx.tag,
    )


GATE = Gate(name="no_skipped_environment", title="No skipped environment", evaluate=_evaluate)
