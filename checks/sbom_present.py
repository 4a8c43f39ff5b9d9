"""SBOM present: a software bill of materials is recorded for the artifact's digest."""

from __future__ import annotations

from checks.base import Gate, GateContext, GateResult
from storage.records import SbomRecord

NEXT_STEP = "Publish the SBOM from the build pipeline: send sbom.published with format cyclonedx or spdx for this tag."


def subject(ctx: GateContext) -> tuple[str | None, str]:
    """The recorded digest of the artifact under evaluation (None if unknown) and how to name it."""
    artifact = ctx.artifact
    if artifact is None:
        return None, f"`{ctx.service}:{ctx.tag}` (no artifact.built recorded)"
    return artifact.digest, f"digest `{artifact.digest}`"


def latest_sbom(ctx: GateContext) -> tuple[SbomRecord | None, str]:
    """The latest SBOM recorded for the artifact under evaluation, and how to name the artifact."""
    digest, named = subject(ctx)
    return ctx.ledger.latest_sbom(ctx.service, ctx.tag, digest), named


async def _evaluate(ctx: GateContext) -> GateResult:
    sbom, named = latest_sbom(ctx)
    if sbom is None:
        # where a person approves, an SBOM is always required: the model's "SBOM generated and available"
        if not ctx.config.policy.require_sbom and not ctx.config.is_protected(ctx.target_environment):
            return GATE.passed("no SBOM recorded; none is required (policy.require_sbom: false)")
        return GATE.failed(f"no SBOM recorded for {named}", NEXT_STEP)
    return GATE.passed(
        f"{sbom.format} SBOM with {len(sbom.components)} components",
        format=sbom.format,
        components=len(sbom.components),
        received_at=sbom.received_at.isoformat(),
        digest=sbom.digest,
    )


GATE = Gate(name="sbom_present", title="SBOM present", evaluate=_evaluate)
