"""What promobot has recorded, as plain values: the evidence gates and cards read through the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ArtifactRecord:
    """An artifact as recorded at build (``artifact.built``)."""

    service: str
    tag: str
    digest: str
    commit_sha: str | None
    pipeline_run_id: str | None
    built_at: datetime | None


@dataclass(frozen=True)
class DeploymentRecord:
    service: str
    tag: str
    environment: str
    status: str  # success | failure
    finished_at: datetime  # as the pipeline reported it
    run_id: str | None = None
    url: str | None = None
    recorded_at: datetime | None = None  # when promobot recorded it, on promobot's own clock


@dataclass(frozen=True)
class VerificationRecord:
    service: str
    tag: str
    environment: str
    result: str  # passed | failed
    finished_at: datetime  # as the pipeline reported it
    checks: dict[str, Any] = field(default_factory=dict)
    url: str | None = None
    recorded_at: datetime | None = None  # when promobot recorded it, on promobot's own clock

    @property
    def on_record_since(self) -> datetime:
        """When promobot knew of it: a pipeline cannot move this back by reporting an earlier finished_at."""
        return self.recorded_at or self.finished_at


@dataclass(frozen=True)
class ScanRecord:
    """A normalised vulnerability scan (``scan.finished``) for one digest."""

    service: str
    tag: str
    digest: str | None
    scanner: str
    received_at: datetime
    findings: tuple[dict[str, Any], ...]  # {id, package, installed, fixed, severity, title, [rule, vex, …]}


@dataclass(frozen=True)
class SbomRecord:
    """A normalised SBOM (``sbom.published``) for one digest."""

    service: str
    tag: str
    digest: str | None
    format: str
    received_at: datetime
    components: tuple[dict[str, Any], ...]  # {name, version, licenses: [expressions], [license_refs]}


@dataclass(frozen=True)
class LockRecord:
    service: str
    environment: str
    locked_by: str
    reason: str
    locked_at: datetime


@dataclass(frozen=True)
class HoldRecord:
    """An artifact taken out of circulation (after a rollback, or by hand) until someone clears it."""

    service: str
    tag: str
    reason: str
    held_by: str | None = None
    held_at: datetime | None = None


@dataclass(frozen=True)
class OutOfBandRecord:
    """A deployment or verification no promobot promotion dispatched: shown as a flag, never evidence."""

    service: str
    tag: str
    environment: str
    kind: str  # deployment | verification
    outcome: str  # success | failure | passed | failed
    reported_by: str
    reported_at: datetime
    reason: str
    accepted: bool
    run_id: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class ServiceEvidence:
    """What one service's /status shows, read at once (``SqlLedger.service_evidence``): per environment
    its latest successful deployment, and the deployments and verifications of the artifact it runs."""

    service: str
    current: dict[str, DeploymentRecord]  # environment -> its latest successful deployment
    deployments: dict[str, tuple[DeploymentRecord, ...]]  # environment -> of its current tag, newest first
    verifications: dict[str, tuple[VerificationRecord, ...]]  # environment -> of its current tag, newest first
    artifacts: dict[str, ArtifactRecord]  # tag -> the artifact, for the tags that run somewhere
    held: frozenset[str]  # the tags among those that are on hold
    locks: dict[str, LockRecord]  # environment -> its lock
    out_of_band: dict[str, OutOfBandRecord]  # environment -> its latest out-of-band report since promobot's
