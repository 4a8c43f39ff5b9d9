"""What a digest lists, computed in SQL: the slowest approvals, failed verifications, rollbacks and
expedited promotions of a period, most notable first, each capped with its total."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from storage.metrics.report import Expedited, FailedVerification, Listing, Rollback, SlowApproval
from storage.metrics.sql import P, Seconds, V, between, only
from storage.statuses import PromotionKind, VerificationResult


def slowest_approvals(
    session: Session, *, start: datetime, end: datetime, services: Sequence[str] | None = None, limit: int = 5
) -> list[SlowApproval]:
    """The longest request → approval waits among promotions approved in the window."""
    seconds = Seconds(P.c.requested_at, P.c.approved_at)
    query = only(
        sa.select(P.c.id, P.c.service, P.c.target_environment, P.c.tag, P.c.requested_by, seconds.label("seconds"))
        .where(P.c.required_approvals > 0, between(P.c.approved_at, start, end))
        .order_by(seconds.desc(), P.c.id)
        .limit(limit),
        P.c.service,
        services,
    )
    return [
        SlowApproval(
            r.id, r.service, r.target_environment, r.tag, r.requested_by, timedelta(seconds=round(float(r.seconds), 3))
        )
        for r in session.execute(query)
    ]


def failed_verifications(
    session: Session, *, start: datetime, end: datetime, services: Sequence[str] | None = None, limit: int = 10
) -> Listing:
    """Verifications that failed in the window, most recent first."""
    where = [V.c.result != VerificationResult.PASSED, between(V.c.finished_at, start, end)]
    total = session.execute(only(sa.select(sa.func.count()).where(*where), V.c.service, services)).scalar_one()
    query = only(
        sa.select(V.c.service, V.c.environment, V.c.tag, V.c.finished_at, V.c.url)
        .where(*where)
        .order_by(V.c.finished_at.desc(), V.c.id.desc())
        .limit(limit),
        V.c.service,
        services,
    )
    return Listing(total, [FailedVerification(*r) for r in session.execute(query)])


def rollbacks(
    session: Session, *, start: datetime, end: datetime, services: Sequence[str] | None = None, limit: int = 10
) -> Listing:
    """Rollbacks requested in the window, most recent first, whatever became of them."""
    where = [P.c.kind == PromotionKind.ROLLBACK, between(P.c.requested_at, start, end)]
    total = session.execute(only(sa.select(sa.func.count()).where(*where), P.c.service, services)).scalar_one()
    query = only(
        sa.select(
            P.c.id,
            P.c.service,
            P.c.target_environment,
            P.c.tag,
            P.c.replaces_tag,
            P.c.status,
            P.c.requested_by,
            P.c.reason,
        )
        .where(*where)
        .order_by(P.c.requested_at.desc(), P.c.id)
        .limit(limit),
        P.c.service,
        services,
    )
    return Listing(total, [Rollback(*r) for r in session.execute(query)])


def expedited_promotions(
    session: Session, *, start: datetime, end: datetime, services: Sequence[str] | None = None, limit: int = 10
) -> Listing:
    """Expedited promotions requested in the window, most recent first, whatever became of them."""
    where = [P.c.expedited.is_(sa.true()), between(P.c.requested_at, start, end)]
    total = session.execute(only(sa.select(sa.func.count()).where(*where), P.c.service, services)).scalar_one()
    query = only(
        sa.select(
            P.c.id,
            P.c.service,
            P.c.target_environment,
            P.c.source_environment,
            P.c.tag,
            P.c.status,
            P.c.requested_by,
            P.c.expedite_reason,
        )
        .where(*where)
        .order_by(P.c.requested_at.desc(), P.c.id)
        .limit(limit),
        P.c.service,
        services,
    )
    return Listing(total, [Expedited(*r) for r in session.execute(query)])
