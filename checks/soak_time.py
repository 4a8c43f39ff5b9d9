"""Soak time: the artifact has run verified in the previous environment long enough."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import format_duration
from checks.base import Gate, GateContext, GateResult, Ledger
from storage.statuses import DeploymentStatus, VerificationResult


@dataclass(frozen=True)
class SoakProgress:
    """How long an artifact has run verified in ``environment``, against what the next one requires."""

    environment: str
    since: datetime | None  # first passed verification after the latest deployment; None: not verified
    soaked: timedelta
    required: timedelta

    @property
    def done(self) -> bool:
        return self.since is not None and self.soaked >= self.required

    @property
    def eligible_at(self) -> datetime | None:
        return self.since + self.required if self.since is not None else None


def soak_progress(
    ledger: Ledger, service: str, tag: str, environment: str, required: timedelta, now: datetime
) -> SoakProgress:
    """Soak of ``tag`` in ``environment``: from the first passed verification after the latest successful
    deployment (the gate, /status and the card all count it this way)."""
    deployments = [
        d for d in ledger.deployments(service, environment, tag=tag, limit=50) if d.status == DeploymentStatus.SUCCESS
    ]
    passed = [
        v
        for v in ledger.verifications(service, environment, tag=tag, limit=50)
        if v.result == VerificationResult.PASSED
    ]
    if deployments:
        passed = [v for v in passed if v.finished_at >= deployments[0].finished_at]
    if not passed:
        return SoakProgress(environment, None, timedelta(0), required)
    since = min(v.finished_at for v in passed)
    return SoakProgress(environment, since, max(now - since, timedelta(0)), required)


async def _evaluate(ctx: GateContext) -> GateResult:
    need = ctx.environment_config.soak_time
    prev = ctx.source_environment
    if prev is None or need.total_seconds() <= 0:
        return GATE.passed("no soak time required", soak_time=format_duration(need))
    soak = soak_progress(ctx.ledger, ctx.service, ctx.tag, prev, need, ctx.now)
    if soak.since is None:
        return GATE.failed(
            f"`{ctx.tag}` has not been verified in {prev}, so its soak has not started",
            f"Verify `{ctx.tag}` in {prev}; it becomes eligible {format_duration(need)} later.",
            environment=prev,
            soak_time=format_duration(need),
        )
    soaked = ctx.now - soak.since
    if soaked >= need:
        return GATE.passed(
            f"in {prev} for {format_duration(soaked)} (needs {format_duration(need)})",
            environment=prev,
            verified_at=soak.since.isoformat(),
            soaked=format_duration(soaked),
        )
    eligible_at = soak.since + need
    return GATE.failed(
        f"in {prev} {format_duration(soaked)} of {format_duration(need)}; eligible at {eligible_at:%Y-%m-%d %H:%M} UTC",
        f"Wait {format_duration(need - soaked)} and ask again.",
        environment=prev,
        verified_at=soak.since.isoformat(),
        eligible_at=eligible_at.isoformat(),
        remaining=format_duration(need - soaked),
    )


GATE = Gate(name="soak_time", title="Soak time", evaluate=_evaluate)
