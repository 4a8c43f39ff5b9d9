"""Previous environment verified: deployed there, verification passed, no recent failure."""

from __future__ import annotations

from checks.base import Gate, GateContext, GateResult
from storage.statuses import DeploymentStatus, VerificationResult


async def _evaluate(ctx: GateContext) -> GateResult:
    prev = ctx.source_environment
    if prev is None:
        return GATE.passed(f"{ctx.target_environment} is the first environment: nothing to verify before it")
    deployments = ctx.ledger.deployments(ctx.service, prev, tag=ctx.tag, limit=50)
    ok = [d for d in deployments if d.status == DeploymentStatus.SUCCESS]
    if not ok:
        failed = [d for d in deployments if d.status != DeploymentStatus.SUCCESS]
        detail = f" (its last deployment there failed at {failed[0].finished_at:%Y-%m-%d %H:%M} UTC)" if failed else ""
        return GATE.failed(
            f"`{ctx.tag}` was never deployed successfully to {prev}{detail}",
            f"Deploy `{ctx.tag}` to {prev} and let its verification pass first.",
            environment=prev,
            deployments=len(deployments),
        )
    deployed = ok[0]
    verifications = ctx.ledger.verifications(ctx.service, prev, tag=ctx.tag, limit=50)
    if not verifications:
        return GATE.failed(
            f"`{ctx.tag}` was deployed to {prev} at {deployed.finished_at:%Y-%m-%d %H:%M} UTC "
            "but no verification has been reported there",
            f"Run the {prev} verification and report verification.finished.",
            environment=prev,
            deployed_at=deployed.finished_at.isoformat(),
        )
    latest = verifications[0]
    if latest.result != VerificationResult.PASSED:
        return GATE.failed(
            f"the latest verification of `{ctx.tag}` in {prev} failed at {latest.finished_at:%Y-%m-%d %H:%M} UTC",
            f"Fix the failure and verify `{ctx.tag}` in {prev} again, or promote a newer build.",
            environment=prev,
            checks=latest.checks,
            url=latest.url,
        )
    window = ctx.environment_config.recent_failure_window
    # recency on promobot's clock too: a failure reported with an old finished_at is still a recent failure
    recent_failures = [
        v
        for v in verifications
        if v.result != VerificationResult.PASSED and ctx.now - max(v.finished_at, v.on_record_since) <= window
    ]
    if recent_failures:
        f = recent_failures[0]
        return GATE.failed(
            f"`{ctx.tag}` failed verification in {prev} at {f.finished_at:%Y-%m-%d %H:%M} UTC, "
            f"within the last {window.days or 1} day(s), before passing again",
            "A flaky artifact needs a person's judgement: investigate the failure, then "
            "ask an admin to promote once it is understood.",
            environment=prev,
            failed_at=f.finished_at.isoformat(),
            checks=f.checks,
            url=f.url,
        )
    return GATE.passed(
        f"deployed to {prev} at {deployed.finished_at:%Y-%m-%d %H:%M} UTC, "
        f"verification passed at {latest.finished_at:%Y-%m-%d %H:%M} UTC",
        environment=prev,
        deployed_at=deployed.finished_at.isoformat(),
        verified_at=latest.finished_at.isoformat(),
        checks=latest.checks,
        url=latest.url,
    )


GATE = Gate(name="previous_environment_verified", title="Previous environment verified", evaluate=_evaluate)
