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
            r = conn.execute(_ARTIFACT, {"service": service, "tag": tag}).first()
        return ArtifactRecord(*r[:6]) if r is not None else None

    def deployments(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[DeploymentRecord]:
        asked = {"service": service, "environment": environment, "tag": tag, "limit": limit}
        with reading(self.engine) as conn:
            rows = conn.execute(_DEPLOYMENTS if tag is None else _DEPLOYMENTS_OF_TAG, asked).all()
        return [DeploymentRecord(*r) for r in rows]

    def verifications(
        self, service: str, environment: str, *, tag: str | None = None, limit: int = 20
    ) -> Sequence[VerificationRecord]:
        asked = {"service": service, "environment": environment, "tag": tag, "limit": limit}
        with reading(self.engine) as conn:
            rows = conn.execute(_VERIFICATIONS if tag is None else _VERIFICATIONS_OF_TAG, asked).all()
        return [
            VerificationRecord(
                r.service, r.tag, r.environment, r.result, r.finished_at, r.checks or {}, r.url, r.recorded_at
            )
            for r in rows
        ]

    def current_artifact(self, service: str, environment: str) -> str | None:
        with reading(self.engine) as conn:
            r = conn.execute(_LATEST_SUCCESS, {"service": service, "environment": environment}).first()
        return r.tag if r is not None else None

    def latest_verified_tag(self, service: str, environment: str) -> str | None:
        """The artifact the environment runs now, if its verification since deployment passed."""
        asked: dict[str, Any] = {"service": service, "environment": environment}
        with reading(self.engine) as conn:
            deployed = conn.execute(_LATEST_SUCCESS, asked).first()
            if deployed is None:
                latest = conn.execute(_LATEST_VERIFICATION, asked).first()
            else:
                since = {**asked, "tag": deployed.tag, "since": deployed.finished_at}
                latest = conn.execute(_LATEST_VERIFICATION_SINCE, since).first()
        return latest.tag if latest is not None and latest.result == VerificationResult.PASSED else None

    def latest_verified_tags(self, service: str, environments: list[str]) -> dict[str, str | None]:
        """``latest_verified_tag`` of each environment, in two queries (not two per environment): the latest
        successful deployment of each, then the newest verification of each deployed artifact there, which
        counts when it finished at or after the deployment. An environment never deployed to by a reported
        deployment falls back to its newest verification."""
        with reading(self.engine) as conn:
            deployed = {r.environment: r for r in conn.execute(_CURRENT, {"service": service})}
            newest = {}
            if deployed:
                asked = {"service": service, "tags": sorted({r.tag for r in deployed.values()}), "limit": 1}
                newest = {(r.environment, r.tag): r for r in conn.execute(_VERIFICATIONS_OF, asked)}
            tags: dict[str, str | None] = {}
            for environment in environments:
                d = deployed.get(environment)
                if d is None:
                    latest = conn.execute(
                        _LATEST_VERIFICATION, {"service": service, "environment": environment}
                    ).first()
                else:
                    latest = newest.get((environment, d.tag))
                    if latest is not None and latest.finished_at < d.finished_at:
                        latest = None
                passed = latest is not None and latest.result == VerificationResult.PASSED
                tags[environment] = latest.tag if passed and latest is not None else None
        return tags

    def latest_scan(self, service: str, tag: str, digest: str | None) -> ScanRecord | None:
        report_id = self._latest_report(_LATEST_SCAN if digest is None else _LATEST_SCAN_OF, service, tag, digest)
        if report_id is None:
            return None
        return self._reports.get(("scan", report_id), lambda: self._scan(report_id))

    def _scan(self, report_id: int) -> ScanRecord:
        with Session(self.engine) as s:
            r = s.get_one(ScanReport, report_id)
            return ScanRecord(r.service, r.tag, r.digest, r.scanner, r.received_at, tuple(r.findings or ()))

    def latest_sbom(self, service: str, tag: str, digest: str | None) -> SbomRecord | None:
        report_id = self._latest_report(_LATEST_SBOM if digest is None else _LATEST_SBOM_OF, service, tag, digest)
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
            row = conn.execute(_LOCK, {"service": service, "environment": environment}).first()
        return LockRecord(*row) if row is not None else None

    def hold(self, service: str, tag: str) -> HoldRecord | None:
        """The artifact's hold: the reason from the artifact, who and when from the audit trail."""
        with reading(self.engine) as conn:  # nearly every artifact asked about is not held: one cheap read
            reason = conn.execute(_HOLD_REASON, {"service": service, "tag": tag}).scalar()
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
            rows = conn.execute(_CURRENT, {"service": service}).all()
            current = {r.environment: DeploymentRecord(*r[:8]) for r in rows}
            last_recorded = {r.environment: r.last_recorded for r in rows}
            runs = {(env, dep.tag) for env, dep in current.items()}
            deployments: dict[str, list[DeploymentRecord]] = {}
            verifications: dict[str, list[VerificationRecord]] = {}
            artifacts: dict[str, ArtifactRecord] = {}
            held: set[str] = set()
            if runs:
                asked = {"service": service, "tags": sorted({tag for _, tag in runs}), "limit": per_environment}
                for r in conn.execute(_DEPLOYMENTS_OF, asked):
                    if (r.environment, r.tag) in runs:
                        deployments.setdefault(r.environment, []).append(DeploymentRecord(*r[:8]))
                for r in conn.execute(_VERIFICATIONS_OF, asked):
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
                for r in conn.execute(_ARTIFACTS, asked):
                    artifacts[r.tag] = ArtifactRecord(*r[:6])
                    if r.hold_reason:
                        held.add(r.tag)
            locks = {r.environment: LockRecord(*r) for r in conn.execute(_LOCKS, {"service": service})}
            out_of_band = {}
            for r in conn.execute(_OUT_OF_BAND, {"service": service}):
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


# --- the prepared statements of ``service_evidence`` (built once: building them cost more than running them)

_D, _V = Deployment.__table__.c, Verification.__table__.c  # type: ignore[attr-defined]
_A, _L = Artifact.__table__.c, EnvironmentLock.__table__.c  # type: ignore[attr-defined]
_O = OutOfBandReport.__table__.c  # type: ignore[attr-defined]
_DEPLOYMENT = (_D.service, _D.tag, _D.environment, _D.status, _D.finished_at, _D.run_id, _D.url, _D.recorded_at)
_VERIFICATION = (_V.service, _V.tag, _V.environment, _V.result, _V.finished_at, _V.checks, _V.url, _V.recorded_at)


def _in(table: Any) -> Any:
    return sa.and_(table.service == sa.bindparam("service"), table.environment == sa.bindparam("environment"))


_ARTIFACT = sa.select(_A.service, _A.tag, _A.digest, _A.commit_sha, _A.pipeline_run_id, _A.built_at).where(
    _A.service == sa.bindparam("service"), _A.tag == sa.bindparam("tag")
)
_NEWEST_DEPLOYMENTS = (_D.finished_at.desc(), _D.id.desc())
_NEWEST_VERIFICATIONS = (_V.finished_at.desc(), _V.id.desc())
_DEPLOYMENTS = sa.select(*_DEPLOYMENT).where(_in(_D)).order_by(*_NEWEST_DEPLOYMENTS).limit(sa.bindparam("limit"))
_DEPLOYMENTS_OF_TAG = _DEPLOYMENTS.where(_D.tag == sa.bindparam("tag"))
_VERIFICATIONS = sa.select(*_VERIFICATION).where(_in(_V)).order_by(*_NEWEST_VERIFICATIONS).limit(sa.bindparam("limit"))
_VERIFICATIONS_OF_TAG = _VERIFICATIONS.where(_V.tag == sa.bindparam("tag"))
_LATEST_SUCCESS = (
    sa.select(_D.tag, _D.finished_at).where(_in(_D), _D.status == "success").order_by(*_NEWEST_DEPLOYMENTS).limit(1)
)
_LATEST_VERIFICATION = sa.select(_V.tag, _V.result).where(_in(_V)).order_by(*_NEWEST_VERIFICATIONS).limit(1)
_LATEST_VERIFICATION_SINCE = _LATEST_VERIFICATION.where(
    _V.tag == sa.bindparam("tag"), _V.finished_at >= sa.bindparam("since")
)


def _latest_report(table: Any) -> Any:
    return (
        sa.select(table.id)
        .where(table.service == sa.bindparam("service"), table.tag == sa.bindparam("tag"))
        .order_by(table.received_at.desc(), table.id.desc())
        .limit(1)
    )


_SCAN, _SBOM = ScanReport.__table__.c, SbomReport.__table__.c  # type: ignore[attr-defined]
_LATEST_SCAN, _LATEST_SBOM = _latest_report(_SCAN), _latest_report(_SBOM)
_LATEST_SCAN_OF = _LATEST_SCAN.where(_SCAN.digest == sa.bindparam("digest"))
_LATEST_SBOM_OF = _LATEST_SBOM.where(_SBOM.digest == sa.bindparam("digest"))


def _newest(table: Any, order: Any, *partition: Any) -> Any:
    """Rank 1 for the newest row of each partition."""
    return sa.func.row_number().over(partition_by=partition, order_by=(order.desc(), table.id.desc())).label("rank")


def _ranked(select_: Any, *, limit: Any) -> Any:
    ranked = select_.subquery()
    return sa.select(ranked).where(ranked.c.rank <= limit).order_by(ranked.c.rank)


_CURRENT = _ranked(
    sa.select(
        *_DEPLOYMENT,
        _newest(_D, _D.finished_at, _D.environment),
        sa.func.max(_D.recorded_at).over(partition_by=_D.environment).label("last_recorded"),
    ).where(_D.service == sa.bindparam("service"), _D.status == "success"),
    limit=1,
)
_DEPLOYMENTS_OF = _ranked(
    sa.select(*_DEPLOYMENT, _newest(_D, _D.finished_at, _D.environment, _D.tag)).where(
        _D.service == sa.bindparam("service"), _D.tag.in_(sa.bindparam("tags", expanding=True))
    ),
    limit=sa.bindparam("limit"),
)
_VERIFICATIONS_OF = _ranked(
    sa.select(*_VERIFICATION, _newest(_V, _V.finished_at, _V.environment, _V.tag)).where(
        _V.service == sa.bindparam("service"), _V.tag.in_(sa.bindparam("tags", expanding=True))
    ),
    limit=sa.bindparam("limit"),
)
_ARTIFACTS = sa.select(
    _A.service, _A.tag, _A.digest, _A.commit_sha, _A.pipeline_run_id, _A.built_at, _A.hold_reason
).where(_A.service == sa.bindparam("service"), _A.tag.in_(sa.bindparam("tags", expanding=True)))
_LOCKS = sa.select(_L.service, _L.environment, _L.locked_by, _L.reason, _L.locked_at).where(
    _L.service == sa.bindparam("service")
)
_LOCK = _LOCKS.where(_L.environment == sa.bindparam("environment"))
_HOLD_REASON = sa.select(_A.hold_reason).where(_A.service == sa.bindparam("service"), _A.tag == sa.bindparam("tag"))
_OUT_OF_BAND = _ranked(
    sa.select(
        _O.service,
        _O.tag,
        _O.environment,
        _O.kind,
        _O.outcome,
        _O.reported_by,
        _O.reported_at,
        _O.reason,
        _O.accepted,
        _O.run_id,
        _O.url,
        _newest(_O, _O.reported_at, _O.environment),
    ).where(_O.service == sa.bindparam("service")),
    limit=1,
)


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
