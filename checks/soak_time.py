"""Soak time: the artifact has run verified in the previous environment long enough."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.clock import format_duration
from checks.base import Gate, GateContext, GateResult
from storage.records import DeploymentRecord, VerificationRecord
from storage.statuses import DeploymentStatus, VerificationResult


class History(Protocol):
    """The part of the ledger a soak is measured from (``/status`` answers it from one read)."""

    def deployments(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[DeploymentRecord]: ...

    def verifications(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[VerificationRecord]: ...


@dataclass(frozen=True)
class SoakProgress:
    """How long an artifact has run verified in ``environment``, against what the next one requires.

    Soak counts on promobot's clock, from when promobot recorded the passing verification: the
    ``finished_at`` a pipeline reports is shown (``reported_at``) but never shortens the soak."""

    environment: str
    since: datetime | None  # promobot recorded the first passed verification after the latest deployment
    soaked: timedelta
    required: timedelta
    reported_at: datetime | None = None  # that verification's finished_at, as the pipeline reported it

    @property
    def done(self) -> bool:
        return self.since is not None and self.soaked >= self.required

    @property
    def eligible_at(self) -> datetime | None:
        return self.since + self.required if self.since is not None else None

    @property
    def reported_earlier(self) -> bool:
        """The pipeline's finished_at is noticeably earlier than promobot's record (backdated or late)."""
        return self.since is not None and self.reported_at is not None and self.since - self.reported_at > REPORT_SLACK


REPORT_SLACK = timedelta(minutes=1)  # a report takes a moment to arrive: no need to mention that


def soak_progress(
    ledger: History, service: str, tag: str, environment: str, required: timedelta, now: datetime
) -> SoakProgress:
    """Soak of ``tag`` in ``environment``: from when promobot recorded the first passed verification after
    the latest successful deployment (the gate, /status and the card all count it this way)."""
    deployments = [
        d for d in ledger.deployments(service, environment, tag=tag, limit=50) if d.status == DeploymentStatus.SUCCESS
    ]
    passed = [
        v
        for v in ledger.verifications(service, environment, tag=tag, limit=50)
        if v.result == VerificationResult.PASSED
    ]
    if deployments:
        deployed = max(d.recorded_at or d.finished_at for d in deployments)
        passed = [v for v in passed if v.on_record_since >= deployed]
    if not passed:
        return SoakProgress(environment, None, timedelta(0), required)
    first = min(passed, key=lambda v: v.on_record_since)
    since = first.on_record_since
    return SoakProgress(environment, since, max(now - since, timedelta(0)), required, first.finished_at)


def _reported(soak: SoakProgress) -> dict[str, str]:
    """Evidence: the pipeline's own finish time, when it differs from promobot's record."""
    return {"reported_finished_at": soak.reported_at.isoformat()} if soak.reported_at and soak.reported_earlier else {}


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
    note = (
        f" (counted from {soak.since:%Y-%m-%d %H:%M} UTC, when promobot recorded the verification; "
        f"the pipeline reported it finished at {soak.reported_at:%Y-%m-%d %H:%M} UTC)"
        if soak.reported_earlier and soak.reported_at
        else ""
    )
    if soaked >= need:
        return GATE.passed(
            f"in {prev} for {format_duration(soaked)} (needs {format_duration(need)}){note}",
            environment=prev,
            verified_at=soak.since.isoformat(),
            soaked=format_duration(soaked),
            **_reported(soak),
        )
    eligible_at = soak.since + need
    return GATE.failed(
        f"in {prev} {format_duration(soaked)} of {format_duration(need)}; eligible at "
        f"{eligible_at:%Y-%m-%d %H:%M} UTC{note}",
        f"Wait {format_duration(need - soaked)} and ask again.",
        environment=prev,
        verified_at=soak.since.isoformat(),
        eligible_at=eligible_at.isoformat(),
        remaining=format_duration(need - soaked),
        **_reported(soak),
    )


GATE = Gate(name="soak_time", title="Soak time", evaluate=_evaluate)
