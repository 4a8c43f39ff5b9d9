"""The gate framework: what a gate is, what it answers, and what it may read.

A gate answers one of three things:

- ``passed``: the rule holds, with the evidence that shows it;
- ``failed``: the rule refuses, with a reason, the evidence and the next step;
- ``errored``: the gate could not tell (a registry down, GitHub 5xx). An
  errored gate blocks exactly like a failed one; it is told apart only so
  that people know to retry rather than to fix the artifact;
- ``off``: the team switched the gate off for this environment (``checks:`` in
  promobot.yml, where the promotion model allows it). It does not block, and it
  is shown, never silently left out;
- ``skipped``: an expedited promotion (a critical security patch) skips it
  (only an intermediate environment, its soak and the deployment window). It
  does not block, and it is shown with the reason.

Gates read evidence only through the small protocols below (ledger, registry,
source host). Concrete clients are chosen once, in ``bot.app``.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from bot.config import EnvironmentConfig, PromobotConfig, ServiceConfig
from storage.records import (
    ArtifactRecord,
    DeploymentRecord,
    HoldRecord,
    LockRecord,
    SbomRecord,
    ScanRecord,
    VerificationRecord,
)
from storage.statuses import PromotionKind


class GateStatus(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERRORED = "errored"
    OFF = "off"  # off by configuration for this environment
    SKIPPED = "skipped"  # skipped for an expedited promotion


BLOCKING = frozenset({GateStatus.FAILED, GateStatus.ERRORED})


@dataclass(frozen=True)
class Expedite:
    """An expedited promotion: why, and which environments between source and target it skips."""

    reason: str
    skipped_environments: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "skipped_environments": list(self.skipped_environments)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Expedite | None:
        if not data:
            return None
        return cls(str(data.get("reason") or ""), tuple(data.get("skipped_environments") or ()))


@dataclass(frozen=True)
class GateResult:
    """One gate's answer. ``reason`` is one human sentence naming the rule."""

    gate: str
    title: str
    status: GateStatus
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    next_step: str = ""

    @property
    def blocks(self) -> bool:
        return self.status in BLOCKING

    def to_json(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "title": self.title,
            "status": self.status.value,
            "reason": self.reason,
            "evidence": self.evidence,
            "next_step": self.next_step,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateResult:
        return cls(
            gate=data["gate"],
            title=data.get("title", data["gate"]),
            status=GateStatus(data["status"]),
            reason=data.get("reason", ""),
            evidence=data.get("evidence") or {},
            next_step=data.get("next_step", ""),
        )


@dataclass(frozen=True)
class GateReport:
    """Every gate's answer for one (service, tag, target environment)."""

    service: str
    tag: str
    target_environment: str
    source_environment: str | None
    digest: str | None
    evaluated_at: datetime
    results: tuple[GateResult, ...]
    expedite: Expedite | None = None

    @property
    def eligible(self) -> bool:
        return bool(self.results) and not any(r.blocks for r in self.results)

    def with_status(self, status: GateStatus) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if r.status is status)

    @property
    def blocking(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if r.blocks)

    @property
    def errored(self) -> bool:
        return any(r.status is GateStatus.ERRORED for r in self.results)

    @property
    def refused(self) -> bool:
        """A gate failed: the rule says no. (Only errored gates means "could not tell yet".)"""
        return any(r.status is GateStatus.FAILED for r in self.results)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateReport:
        return cls(
            service=data["service"],
            tag=data["tag"],
            target_environment=data["target_environment"],
            source_environment=data.get("source_environment"),
            digest=data.get("digest"),
            evaluated_at=datetime.fromisoformat(data["evaluated_at"]),
            results=tuple(GateResult.from_json(g) for g in data.get("gates", [])),
            expedite=Expedite.from_json(data.get("expedite")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "tag": self.tag,
            "digest": self.digest,
            "source_environment": self.source_environment,
            "target_environment": self.target_environment,
            "evaluated_at": self.evaluated_at.isoformat(),
            "eligible": self.eligible,
            "expedite": self.expedite.to_json() if self.expedite else None,
            "gates": [r.to_json() for r in self.results],
        }


# --- evidence the gates read -------------------------------------------------


class Ledger(Protocol):
    """What promobot has recorded: artifacts, deployments, verifications, reports."""

    def artifact(self, service: str, tag: str) -> ArtifactRecord | None: ...

    def deployments(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[DeploymentRecord]: ...

    def verifications(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[VerificationRecord]: ...

    def current_artifact(self, service: str, environment: str) -> str | None:
        """The tag last deployed successfully to the environment, if any."""
        ...

    def latest_verified_tag(self, service: str, environment: str) -> str | None:
        """The tag whose latest verification in the environment passed most recently."""
        ...

    def latest_scan(self, service: str, tag: str, digest: str | None) -> ScanRecord | None: ...

    def latest_sbom(self, service: str, tag: str, digest: str | None) -> SbomRecord | None: ...

    def lock(self, service: str, environment: str) -> LockRecord | None: ...

    def hold(self, service: str, tag: str) -> HoldRecord | None:
        """The hold on this artifact, if it is on hold."""
        ...


class RegistryError(Exception):
    """The registry could not be asked (network, 5xx, auth): the gate errors."""


class ManifestNotFound(Exception):
    """The registry answered that the image or tag does not exist."""


@dataclass(frozen=True)
class IndexEntry:
    """One manifest an image index lists: its digest and what it is for (``linux/arm64/v8``)."""

    digest: str
    media_type: str | None
    platform: str
    attestation: bool = False  # buildx's attestation manifests ride in the index but are no image


@dataclass(frozen=True)
class ManifestInfo:
    digest: str
    media_type: str | None
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    manifests: tuple[IndexEntry, ...] = ()  # for an image index (multi-arch image): what it lists


class Registry(Protocol):
    async def manifest(self, image: str, tag: str) -> ManifestInfo:
        """The current manifest for image:tag; raises ManifestNotFound or RegistryError."""
        ...


class SourceHostError(Exception):
    """The source host could not be asked: the gate errors."""


class SourceHost(Protocol):
    async def commit_reachable(self, repository: str, sha: str, ref: str) -> tuple[bool, str]:
        """Whether ``sha`` exists and is reachable from ``ref``; the second item explains."""
        ...

    async def commit_time(self, repository: str, sha: str) -> datetime | None:
        """When ``sha`` was committed (its committer date, the time SOURCE_DATE_EPOCH is set to);
        None when the repository has no such commit. Raises SourceHostError when it cannot ask."""
        ...


# --- what a gate is ----------------------------------------------------------


@dataclass(frozen=True)
class GateContext:
    """Everything one evaluation may look at. ``now`` is the evaluation's clock."""

    service: str
    tag: str
    target_environment: str
    source_environment: str | None
    now: datetime
    config: PromobotConfig
    ledger: Ledger
    registry: Registry | None = None
    source_host: SourceHost | None = None
    kind: str = PromotionKind.PROMOTION  # promotion | rollback
    expedite: Expedite | None = None  # an expedited promotion: some gates are skipped (``checks.catalog``)

    @property
    def service_config(self) -> ServiceConfig:
        return self.config.services[self.service]

    @property
    def environment_config(self) -> EnvironmentConfig:
        return self.config.environment(self.target_environment)

    @property
    def artifact(self) -> ArtifactRecord | None:
        return self.ledger.artifact(self.service, self.tag)


GateFn = Callable[[GateContext], Awaitable[GateResult]]


@dataclass(frozen=True)
class Gate:
    """A named rule. ``evaluate`` must not raise for a refusal: it returns failed."""

    name: str
    title: str
    evaluate: GateFn
    timeout: float = 10.0
    preset: GateResult | None = None  # off by configuration or skipped for expedite: not evaluated

    def settled(self, status: GateStatus, reason: str, **evidence: Any) -> Gate:
        """This gate answered ``status`` (off or skipped) without evaluating it."""
        return replace(self, preset=GateResult(self.name, self.title, status, reason, evidence))

    def passed(self, reason: str, **evidence: Any) -> GateResult:
        return GateResult(self.name, self.title, GateStatus.PASSED, reason, evidence)

    def failed(self, reason: str, next_step: str = "", **evidence: Any) -> GateResult:
        return GateResult(self.name, self.title, GateStatus.FAILED, reason, evidence, next_step)

    def errored(self, reason: str, next_step: str = "", **evidence: Any) -> GateResult:
        return GateResult(
            self.name,
            self.title,
            GateStatus.ERRORED,
            reason,
            evidence,
            next_step or "Retry in a moment; if it persists, check the evidence source.",
        )
