"""The ledger: what promobot has recorded, read through the gates' ``Ledger`` protocol.

Deployments and verifications here are evidence: the first environment's reports and those linked to the
promotion promobot dispatched. Out-of-band reports live in their own table and are read only as flags
(``out_of_band``), so no gate, known-good target, /status artifact or metric can count them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from storage.models import (
    Artifact,
    AuditEvent,
    Deployment,
    EnvironmentLock,
    OutOfBandReport,
    SbomReport,
    ScanReport,
    Verification,
)
from storage.records import (
    ArtifactRecord,
    DeploymentRecord,
    HoldRecord,
    LockRecord,
    OutOfBandRecord,
    SbomRecord,
    ScanRecord,
    VerificationRecord,
)
from storage.statuses import VerificationResult

HELD = "artifact.held"  # the audit action that says who put an artifact on hold, and when


class SqlLedger:
    """Reads through short sessions of its own; never writes."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def artifact(self, service: str, tag: str) -> ArtifactRecord | None:
        with Session(self.engine) as s:
            a = s.exec(select(Artifact).where(col(Artifact.service) == service, col(Artifact.tag) == tag)).first()
            if a is None:
                return None
            return ArtifactRecord(a.service, a.tag, a.digest, a.commit_sha, a.pipeline_run_id, a.built_at)

    def deployments(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[DeploymentRecord]:
        with Session(self.engine) as s:
            q = select(Deployment).where(col(Deployment.service) == service, col(Deployment.environment) == environment)
            if tag is not None:
                q = q.where(col(Deployment.tag) == tag)
            q = q.order_by(col(Deployment.finished_at).desc(), col(Deployment.id).desc()).limit(limit)
            return [
                DeploymentRecord(
                    d.service, d.tag, d.environment, d.status, d.finished_at, d.run_id, d.url, d.recorded_at
                )
                for d in s.exec(q)
            ]

    def verifications(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[VerificationRecord]:
        with Session(self.engine) as s:
            q = select(Verification).where(
                col(Verification.service) == service, col(Verification.environment) == environment
            )
            if tag is not None:
                q = q.where(col(Verification.tag) == tag)
            q = q.order_by(col(Verification.finished_at).desc(), col(Verification.id).desc()).limit(limit)
            return [
                VerificationRecord(
                    v.service, v.tag, v.environment, v.result, v.finished_at, v.checks or {}, v.url, v.recorded_at
                )
                for v in s.exec(q)
            ]

    def current_artifact(self, service: str, environment: str) -> str | None:
        with Session(self.engine) as s:
            return s.exec(
                select(col(Deployment.tag))
                .where(
                    col(Deployment.service) == service,
                    col(Deployment.environment) == environment,
                    col(Deployment.status) == "success",
                )
                .order_by(col(Deployment.finished_at).desc(), col(Deployment.id).desc())
                .limit(1)
            ).first()

    def latest_verified_tag(self, service: str, environment: str) -> str | None:
        """The artifact the environment runs now, if its verification since deployment passed."""
        with Session(self.engine) as s:
            deployed = s.exec(
                select(Deployment)
                .where(
                    col(Deployment.service) == service,
                    col(Deployment.environment) == environment,
                    col(Deployment.status) == "success",
                )
                .order_by(col(Deployment.finished_at).desc(), col(Deployment.id).desc())
                .limit(1)
            ).first()
            q = select(Verification).where(
                col(Verification.service) == service, col(Verification.environment) == environment
            )
            if deployed is not None:
                q = q.where(
                    col(Verification.tag) == deployed.tag, col(Verification.finished_at) >= deployed.finished_at
                )
            latest = s.exec(
                q.order_by(col(Verification.finished_at).desc(), col(Verification.id).desc()).limit(1)
            ).first()
            return latest.tag if latest is not None and latest.result == VerificationResult.PASSED else None

    def latest_scan(self, service: str, tag: str, digest: str | None) -> ScanRecord | None:
        with Session(self.engine) as s:
            q = select(ScanReport).where(col(ScanReport.service) == service, col(ScanReport.tag) == tag)
            if digest is not None:
                q = q.where(col(ScanReport.digest) == digest)
            r = s.exec(q.order_by(col(ScanReport.received_at).desc(), col(ScanReport.id).desc()).limit(1)).first()
            if r is None:
                return None
            return ScanRecord(r.service, r.tag, r.digest, r.scanner, r.received_at, tuple(r.findings or ()))

    def latest_sbom(self, service: str, tag: str, digest: str | None) -> SbomRecord | None:
        with Session(self.engine) as s:
            q = select(SbomReport).where(col(SbomReport.service) == service, col(SbomReport.tag) == tag)
            if digest is not None:
                q = q.where(col(SbomReport.digest) == digest)
            r = s.exec(q.order_by(col(SbomReport.received_at).desc(), col(SbomReport.id).desc()).limit(1)).first()
            if r is None:
                return None
            return SbomRecord(r.service, r.tag, r.digest, r.format, r.received_at, tuple(r.components or ()))

    def lock(self, service: str, environment: str) -> LockRecord | None:
        with Session(self.engine) as s:
            lk = s.get(EnvironmentLock, (service, environment))
            if lk is None:
                return None
            return LockRecord(lk.service, lk.environment, lk.locked_by, lk.reason, lk.locked_at)

    def hold(self, service: str, tag: str) -> HoldRecord | None:
        """The artifact's hold: the reason from the artifact, who and when from the audit trail."""
        with Session(self.engine) as s:
            reason = s.exec(
                select(col(Artifact.hold_reason)).where(col(Artifact.service) == service, col(Artifact.tag) == tag)
            ).first()
            if not reason:
                return None
            events = s.exec(
                select(AuditEvent)
                .where(col(AuditEvent.action) == HELD, col(AuditEvent.service) == service)
                .order_by(col(AuditEvent.seq).desc())
                .limit(200)
            )
            placed = next((e for e in events if (e.detail or {}).get("tag") == tag), None)
            if placed is None:  # purged by retention: the reason is all that is left
                return HoldRecord(service, tag, reason)
            return HoldRecord(service, tag, reason, (placed.detail or {}).get("held_by") or placed.actor, placed.at)

    # --- every service at once (``/status``, App Home) ---------------------------------

    def current_deployments(self) -> dict[tuple[str, str], DeploymentRecord]:
        """The latest successful deployment of every (service, environment), in one query."""
        with Session(self.engine) as s:
            rank = sa.func.row_number().over(
                partition_by=(col(Deployment.service), col(Deployment.environment)),
                order_by=(col(Deployment.finished_at).desc(), col(Deployment.id).desc()),
            )
            latest = (
                select(col(Deployment.id), rank.label("rank")).where(col(Deployment.status) == "success").subquery()
            )
            rows = s.exec(select(Deployment).join(latest, latest.c.id == col(Deployment.id)).where(latest.c.rank == 1))
            return {
                (d.service, d.environment): DeploymentRecord(
                    d.service, d.tag, d.environment, d.status, d.finished_at, d.run_id, d.url, d.recorded_at
                )
                for d in rows
            }

    def latest_verifications(self) -> dict[tuple[str, str], VerificationRecord]:
        """The latest verification of every (service, environment), in one query."""
        with Session(self.engine) as s:
            rank = sa.func.row_number().over(
                partition_by=(col(Verification.service), col(Verification.environment)),
                order_by=(col(Verification.finished_at).desc(), col(Verification.id).desc()),
            )
            latest = select(col(Verification.id), rank.label("rank")).subquery()
            rows = s.exec(
                select(Verification).join(latest, latest.c.id == col(Verification.id)).where(latest.c.rank == 1)
            )
            return {
                (v.service, v.environment): VerificationRecord(
                    v.service, v.tag, v.environment, v.result, v.finished_at, v.checks or {}, v.url, v.recorded_at
                )
                for v in rows
            }

    def locks(self) -> list[LockRecord]:
        with Session(self.engine) as s:
            return [
                LockRecord(lk.service, lk.environment, lk.locked_by, lk.reason, lk.locked_at)
                for lk in s.exec(select(EnvironmentLock))
            ]

    def held_tags(self) -> set[tuple[str, str]]:
        """(service, tag) of every artifact on hold."""
        with Session(self.engine) as s:
            return set(
                s.exec(select(col(Artifact.service), col(Artifact.tag)).where(col(Artifact.hold_reason).is_not(None)))
            )

    # --- out-of-band reports: flags, never evidence -----------------------------------------

    def out_of_band(self, service: str, environment: str) -> OutOfBandRecord | None:
        """The latest out-of-band report into the environment since promobot last recorded a deployment
        there (a later in-band deployment replaced whatever it was)."""
        with Session(self.engine) as s:
            since = s.exec(
                select(sa.func.max(col(Deployment.recorded_at))).where(
                    col(Deployment.service) == service,
                    col(Deployment.environment) == environment,
                    col(Deployment.status) == "success",
                )
            ).one()
            q = select(OutOfBandReport).where(
                col(OutOfBandReport.service) == service, col(OutOfBandReport.environment) == environment
            )
            if since is not None:
                q = q.where(col(OutOfBandReport.reported_at) > since)
            r = s.exec(q.order_by(col(OutOfBandReport.reported_at).desc(), col(OutOfBandReport.id).desc())).first()
            return _out_of_band(r) if r else None

    def out_of_band_flags(self) -> dict[tuple[str, str], OutOfBandRecord]:
        """``out_of_band`` for every (service, environment), in two queries."""
        with Session(self.engine) as s:
            since = {
                (service, environment): at
                for service, environment, at in s.exec(
                    select(
                        col(Deployment.service), col(Deployment.environment), sa.func.max(col(Deployment.recorded_at))
                    )
                    .where(col(Deployment.status) == "success")
                    .group_by(col(Deployment.service), col(Deployment.environment))
                )
            }
            rank = sa.func.row_number().over(
                partition_by=(col(OutOfBandReport.service), col(OutOfBandReport.environment)),
                order_by=(col(OutOfBandReport.reported_at).desc(), col(OutOfBandReport.id).desc()),
            )
            latest = select(col(OutOfBandReport.id), rank.label("rank")).subquery()
            rows = s.exec(
                select(OutOfBandReport).join(latest, latest.c.id == col(OutOfBandReport.id)).where(latest.c.rank == 1)
            )
            return {
                (r.service, r.environment): _out_of_band(r)
                for r in rows
                if (r.service, r.environment) not in since or r.reported_at > since[(r.service, r.environment)]
            }


def _out_of_band(r: OutOfBandReport) -> OutOfBandRecord:
    return OutOfBandRecord(
        r.service,
        r.tag,
        r.environment,
        r.kind,
        r.outcome,
        r.reported_by,
        r.reported_at,
        r.reason,
        r.accepted,
        r.run_id,
        r.url,
    )
