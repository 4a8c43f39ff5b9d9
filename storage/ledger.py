"""The ledger: what promobot has recorded, read through the gates' ``Ledger`` protocol.

Deployments and verifications here are evidence: the first environment's reports and those linked to the
promotion promobot dispatched. Out-of-band reports live in their own table and are read only as flags
(``out_of_band``), so no gate, known-good target, /status artifact or metric can count them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from storage import ledger_sql as q
from storage.db import reading
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
    ServiceEvidence,
    VerificationRecord,
)
from storage.statuses import VerificationResult

T = TypeVar("T")

HELD = "artifact.held"  # the audit action that says who put an artifact on hold, and when


class SqlLedger:
    """Reads through short connections of its own; never writes."""

    def __init__(self, engine: Engine):
        self.engine = engine
        # a scan or SBOM is never changed once recorded (a new one is a new row): the parsed findings and
        # components of the latest few are kept, so a check does not decode a large report again
        self._reports = _Kept(32)

    # The questions every check asks run as statements prepared once, on a bare connection: building an
    # ORM query and loading entities cost more than the query itself.

    def artifact(self, service: str, tag: str) -> ArtifactRecord | None:
        with reading(self.engine) as conn:
            r = conn.execute(q.ARTIFACT, {"service": service, "tag": tag}).first()
        return ArtifactRecord(*r[:6]) if r is not None else None

    def deployments(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[DeploymentRecord]:
        asked = {"service": service, "environment": environment, "tag": tag, "limit": limit}
        with reading(self.engine) as conn:
            rows = conn.execute(q.DEPLOYMENTS if tag is None else q.DEPLOYMENTS_OF_TAG, asked).all()
        return [DeploymentRecord(*r) for r in rows]

    def verifications(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[VerificationRecord]:
        asked = {"service": service, "environment": environment, "tag": tag, "limit": limit}
        with reading(self.engine) as conn:
            rows = conn.execute(q.VERIFICATIONS if tag is None else q.VERIFICATIONS_OF_TAG, asked).all()
        return [
            VerificationRecord(
                r.service, r.tag, r.environment, r.result, r.finished_at, r.checks or {}, r.url, r.recorded_at
            )
            for r in rows
        ]

    def current_artifact(self, service: str, environment: str) -> str | None:
        with reading(self.engine) as conn:
            r = conn.execute(q.LATEST_SUCCESS, {"service": service, "environment": environment}).first()
        return r.tag if r is not None else None

    def latest_verified_tag(self, service: str, environment: str) -> str | None:
        """The artifact the environment runs now, if its verification since deployment passed."""
        asked: dict[str, Any] = {"service": service, "environment": environment}
        with reading(self.engine) as conn:
            deployed = conn.execute(q.LATEST_SUCCESS, asked).first()
            if deployed is None:
                latest = conn.execute(q.LATEST_VERIFICATION, asked).first()
            else:
                since = {**asked, "tag": deployed.tag, "since": deployed.finished_at}
                latest = conn.execute(q.LATEST_VERIFICATION_SINCE, since).first()
        return latest.tag if latest is not None and latest.result == VerificationResult.PASSED else None

    def latest_verified_tags(self, service: str, environments: list[str]) -> dict[str, str | None]:
        """``latest_verified_tag`` of each environment, in two queries (not two per environment): the latest
        successful deployment of each, then the newest verification of each deployed artifact there, which
        counts when it finished at or after the deployment. An environment never deployed to by a reported
        deployment falls back to its newest verification."""
        with reading(self.engine) as conn:
            deployed = {r.environment: r for r in conn.execute(q.CURRENT, {"service": service})}
            newest = {}
            if deployed:
                asked = {"service": service, "tags": sorted({r.tag for r in deployed.values()}), "limit": 1}
                newest = {(r.environment, r.tag): r for r in conn.execute(q.VERIFICATIONS_OF, asked)}
            tags: dict[str, str | None] = {}
            for environment in environments:
                d = deployed.get(environment)
                if d is None:
                    latest = conn.execute(
                        q.LATEST_VERIFICATION, {"service": service, "environment": environment}
                    ).first()
                else:
                    latest = newest.get((environment, d.tag))
                    if latest is not None and latest.finished_at < d.finished_at:
                        latest = None
                passed = latest is not None and latest.result == VerificationResult.PASSED
                tags[environment] = latest.tag if passed and latest is not None else None
        return tags

    def latest_scan(self, service: str, tag: str, digest: str | None) -> ScanRecord | None:
        report_id = self._latest_report(q.LATEST_SCAN if digest is None else q.LATEST_SCAN_OF, service, tag, digest)
        if report_id is None:
            return None
        return self._reports.get(("scan", report_id), lambda: self._scan(report_id))

    def _scan(self, report_id: int) -> ScanRecord:
        with Session(self.engine) as s:
            r = s.get_one(ScanReport, report_id)
            return ScanRecord(r.service, r.tag, r.digest, r.scanner, r.received_at, tuple(r.findings or ()))

    def latest_sbom(self, service: str, tag: str, digest: str | None) -> SbomRecord | None:
        report_id = self._latest_report(q.LATEST_SBOM if digest is None else q.LATEST_SBOM_OF, service, tag, digest)
        if report_id is None:
            return None
        return self._reports.get(("sbom", report_id), lambda: self._sbom(report_id))

    def _sbom(self, report_id: int) -> SbomRecord:
        with Session(self.engine) as s:
            r = s.get_one(SbomReport, report_id)
            return SbomRecord(r.service, r.tag, r.digest, r.format, r.received_at, tuple(r.components or ()))

    def _latest_report(self, query: Any, service: str, tag: str, digest: str | None) -> int | None:
        """The id of the newest report of the artifact (of ``digest``, when given)."""
        with reading(self.engine) as conn:
            found = conn.execute(query, {"service": service, "tag": tag, "digest": digest}).scalar()
        return int(found) if found is not None else None

    def lock(self, service: str, environment: str) -> LockRecord | None:
        with reading(self.engine) as conn:
            row = conn.execute(q.LOCK, {"service": service, "environment": environment}).first()
        return LockRecord(*row) if row is not None else None

    def hold(self, service: str, tag: str) -> HoldRecord | None:
        """The artifact's hold: the reason from the artifact, who and when from the audit trail."""
        with reading(self.engine) as conn:  # nearly every artifact asked about is not held: one cheap read
            reason = conn.execute(q.HOLD_REASON, {"service": service, "tag": tag}).scalar()
        if not reason:
            return None
        with Session(self.engine) as s:
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

    # --- one service at once (``/status SERVICE``) ------------------------------------------

    def service_evidence(self, service: str, *, per_environment: int = 50) -> ServiceEvidence:
        """Everything ``/status SERVICE`` shows, in six prepared queries on one connection (not a dozen
        per environment): each environment's latest successful deployment, then the deployments and
        verifications of the artifact it runs (at most ``per_environment`` of each), those artifacts, the
        locks and the out-of-band reports since promobot's last deployment."""
        with reading(self.engine) as conn:
            rows = conn.execute(q.CURRENT, {"service": service}).all()
            current = {r.environment: DeploymentRecord(*r[:8]) for r in rows}
            last_recorded = {r.environment: r.last_recorded for r in rows}
            runs = {(env, dep.tag) for env, dep in current.items()}
            deployments: dict[str, list[DeploymentRecord]] = {}
            verifications: dict[str, list[VerificationRecord]] = {}
            artifacts: dict[str, ArtifactRecord] = {}
            held: set[str] = set()
            if runs:
                asked = {"service": service, "tags": sorted({tag for _, tag in runs}), "limit": per_environment}
                for r in conn.execute(q.DEPLOYMENTS_OF, asked):
                    if (r.environment, r.tag) in runs:
                        deployments.setdefault(r.environment, []).append(DeploymentRecord(*r[:8]))
                for r in conn.execute(q.VERIFICATIONS_OF, asked):
                    if (r.environment, r.tag) in runs:
                        verifications.setdefault(r.environment, []).append(
                            VerificationRecord(
                                r.service,
                                r.tag,
                                r.environment,
                                r.result,
                                r.finished_at,
                                r.checks or {},
                                r.url,
                                r.recorded_at,
                            )
                        )
                for r in conn.execute(q.ARTIFACTS, asked):
                    artifacts[r.tag] = ArtifactRecord(*r[:6])
                    if r.hold_reason:
                        held.add(r.tag)
            locks = {r.environment: LockRecord(*r) for r in conn.execute(q.LOCKS, {"service": service})}
            out_of_band = {}
            for r in conn.execute(q.OUT_OF_BAND, {"service": service}):
                since = last_recorded.get(r.environment)
                if since is None or r.reported_at > since:
                    out_of_band[r.environment] = OutOfBandRecord(*r[:11])
        return ServiceEvidence(
            service,
            current,
            {env: tuple(found) for env, found in deployments.items()},
            {env: tuple(found) for env, found in verifications.items()},
            artifacts,
            frozenset(held),
            locks,
            out_of_band,
        )

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


class _Kept:
    """The last ``size`` values loaded, by key (thread-safe; a value is loaded outside the lock)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return cast(T, self._values[key])
        value = load()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self._size:
                self._values.popitem(last=False)
        return value


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
