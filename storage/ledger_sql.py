"""The ledger's prepared statements: built once at import (building one cost more than running it), run
by ``storage.ledger.SqlLedger`` with bound parameters."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from storage.models import Artifact, Deployment, EnvironmentLock, OutOfBandReport, SbomReport, ScanReport, Verification

_D, _V = Deployment.__table__.c, Verification.__table__.c  # type: ignore[attr-defined]
_A, _L = Artifact.__table__.c, EnvironmentLock.__table__.c  # type: ignore[attr-defined]
_O = OutOfBandReport.__table__.c  # type: ignore[attr-defined]
_DEPLOYMENT = (_D.service, _D.tag, _D.environment, _D.status, _D.finished_at, _D.run_id, _D.url, _D.recorded_at)
_VERIFICATION = (_V.service, _V.tag, _V.environment, _V.result, _V.finished_at, _V.checks, _V.url, _V.recorded_at)


def _in(table: Any) -> Any:
    return sa.and_(table.service == sa.bindparam("service"), table.environment == sa.bindparam("environment"))


ARTIFACT = sa.select(_A.service, _A.tag, _A.digest, _A.commit_sha, _A.pipeline_run_id, _A.built_at).where(
    _A.service == sa.bindparam("service"), _A.tag == sa.bindparam("tag")
)
_NEWEST_DEPLOYMENTS = (_D.finished_at.desc(), _D.id.desc())
_NEWEST_VERIFICATIONS = (_V.finished_at.desc(), _V.id.desc())
DEPLOYMENTS = sa.select(*_DEPLOYMENT).where(_in(_D)).order_by(*_NEWEST_DEPLOYMENTS).limit(sa.bindparam("limit"))
DEPLOYMENTS_OF_TAG = DEPLOYMENTS.where(_D.tag == sa.bindparam("tag"))
VERIFICATIONS = sa.select(*_VERIFICATION).where(_in(_V)).order_by(*_NEWEST_VERIFICATIONS).limit(sa.bindparam("limit"))
VERIFICATIONS_OF_TAG = VERIFICATIONS.where(_V.tag == sa.bindparam("tag"))
LATEST_SUCCESS = (
    sa.select(_D.tag, _D.finished_at).where(_in(_D), _D.status == "success").order_by(*_NEWEST_DEPLOYMENTS).limit(1)
)
LATEST_VERIFICATION = sa.select(_V.tag, _V.result).where(_in(_V)).order_by(*_NEWEST_VERIFICATIONS).limit(1)
LATEST_VERIFICATION_SINCE = LATEST_VERIFICATION.where(
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
LATEST_SCAN, LATEST_SBOM = _latest_report(_SCAN), _latest_report(_SBOM)
LATEST_SCAN_OF = LATEST_SCAN.where(_SCAN.digest == sa.bindparam("digest"))
LATEST_SBOM_OF = LATEST_SBOM.where(_SBOM.digest == sa.bindparam("digest"))


def _newest(table: Any, order: Any, *partition: Any) -> Any:
    """Rank 1 for the newest row of each partition."""
    return sa.func.row_number().over(partition_by=partition, order_by=(order.desc(), table.id.desc())).label("rank")


def _ranked(select_: Any, *, limit: Any) -> Any:
    ranked = select_.subquery()
    return sa.select(ranked).where(ranked.c.rank <= limit).order_by(ranked.c.rank)


CURRENT = _ranked(
    sa.select(
        *_DEPLOYMENT,
        _newest(_D, _D.finished_at, _D.environment),
        sa.func.max(_D.recorded_at).over(partition_by=_D.environment).label("last_recorded"),
    ).where(_D.service == sa.bindparam("service"), _D.status == "success"),
    limit=1,
)
DEPLOYMENTS_OF = _ranked(
    sa.select(*_DEPLOYMENT, _newest(_D, _D.finished_at, _D.environment, _D.tag)).where(
        _D.service == sa.bindparam("service"), _D.tag.in_(sa.bindparam("tags", expanding=True))
    ),
    limit=sa.bindparam("limit"),
)
VERIFICATIONS_OF = _ranked(
    sa.select(*_VERIFICATION, _newest(_V, _V.finished_at, _V.environment, _V.tag)).where(
        _V.service == sa.bindparam("service"), _V.tag.in_(sa.bindparam("tags", expanding=True))
    ),
    limit=sa.bindparam("limit"),
)
ARTIFACTS = sa.select(
    _A.service, _A.tag, _A.digest, _A.commit_sha, _A.pipeline_run_id, _A.built_at, _A.hold_reason
).where(_A.service == sa.bindparam("service"), _A.tag.in_(sa.bindparam("tags", expanding=True)))
LOCKS = sa.select(_L.service, _L.environment, _L.locked_by, _L.reason, _L.locked_at).where(
    _L.service == sa.bindparam("service")
)
LOCK = LOCKS.where(_L.environment == sa.bindparam("environment"))
HOLD_REASON = sa.select(_A.hold_reason).where(_A.service == sa.bindparam("service"), _A.tag == sa.bindparam("tag"))
OUT_OF_BAND = _ranked(
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
