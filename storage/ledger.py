"""The ledger: what promobot has recorded, read through the gates' ``Ledger`` protocol."""

from __future__ import annotations

from typing import Sequence

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from checks.base import (ArtifactRecord, DeploymentRecord, LockRecord, SbomRecord, ScanRecord,
                         VerificationRecord)
from storage.models import (Artifact, Deployment, EnvironmentLock, SbomReport, ScanReport,
                            Verification)


class SqlLedger:
    """Reads through short sessions of its own; never writes."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def artifact(self, service: str, tag: str) -> ArtifactRecord | None:
        with Session(self.engine) as s:
            a = s.exec(select(Artifact).where(Artifact.service == service, Artifact.tag == tag)).first()
            if a is None:
                return None
            return ArtifactRecord(a.service, a.tag, a.digest, a.commit_sha, a.pipeline_run_id, a.built_at)

    def deployments(self, service: str, environment: str, *, tag: str | None = None,
                    limit: int = 20) -> Sequence[DeploymentRecord]:
        with Session(self.engine) as s:
            q = select(Deployment).where(Deployment.service == service, Deployment.environment == environment)
            if tag is not None:
                q = q.where(Deployment.tag == tag)
            q = q.order_by(col(Deployment.finished_at).desc(), col(Deployment.id).desc()).limit(limit)
            return [DeploymentRecord(d.service, d.tag, d.environment, d.status, d.finished_at, d.run_id, d.url)
                    for d in s.exec(q)]

    def verifications(self, service: str, environment: str, *, tag: str | None = None,
                      limit: int = 20) -> Sequence[VerificationRecord]:
        with Session(self.engine) as s:
            q = select(Verification).where(Verification.service == service,
                                           Verification.environment == environment)
            if tag is not None:
                q = q.where(Verification.tag == tag)
            q = q.order_by(col(Verification.finished_at).desc(), col(Verification.id).desc()).limit(limit)
            return [VerificationRecord(v.service, v.tag, v.environment, v.result, v.finished_at,
                                       v.checks or {}, v.url) for v in s.exec(q)]

    def current_artifact(self, service: str, environment: str) -> str | None:
        with Session(self.engine) as s:
            return s.exec(select(Deployment.tag)
                          .where(Deployment.service == service, Deployment.environment == environment,
                                 Deployment.status == "success")
                          .order_by(col(Deployment.finished_at).desc(), col(Deployment.id).desc())
                          .limit(1)).first()

    def latest_verified_tag(self, service: str, environment: str) -> str | None:
        """The artifact the environment runs now, if its verification since deployment passed."""
        with Session(self.engine) as s:
            deployed = s.exec(select(Deployment)
                              .where(Deployment.service == service, Deployment.environment == environment,
                                     Deployment.status == "success")
                              .order_by(col(Deployment.finished_at).desc(), col(Deployment.id).desc())
                              .limit(1)).first()
            q = select(Verification).where(Verification.service == service,
                                           Verification.environment == environment)
            if deployed is not None:
                q = q.where(Verification.tag == deployed.tag, Verification.finished_at >= deployed.finished_at)
            latest = s.exec(q.order_by(col(Verification.finished_at).desc(), col(Verification.id).desc())
                            .limit(1)).first()
            return latest.tag if latest is not None and latest.result == "passed" else None

    def latest_scan(self, service: str, tag: str, digest: str | None) -> ScanRecord | None:
        with Session(self.engine) as s:
            q = select(ScanReport).where(ScanReport.service == service, ScanReport.tag == tag)
            if digest is not None:
                q = q.where(ScanReport.digest == digest)
            r = s.exec(q.order_by(col(ScanReport.received_at).desc(), col(ScanReport.id).desc()).limit(1)).first()
            if r is None:
                return None
            return ScanRecord(r.service, r.tag, r.digest, r.scanner, r.received_at, tuple(r.findings or ()))

    def latest_sbom(self, service: str, tag: str, digest: str | None) -> SbomRecord | None:
        with Session(self.engine) as s:
            q = select(SbomReport).where(SbomReport.service == service, SbomReport.tag == tag)
            if digest is not None:
                q = q.where(SbomReport.digest == digest)
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
