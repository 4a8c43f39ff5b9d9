"""One promotion's rows, read by key with prepared Core statements.

A click reads its promotion before Slack is acknowledged, so this read is on the hot path: loading the
row through the ORM (``Session.get``) cost twice as much as the query. The objects returned are plain
instances of the table models, not attached to any session: read them, never add them back.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage.db import reading
from storage.models import ActivePromotion, Approval, Promotion

_P = Promotion.__table__.c  # type: ignore[attr-defined]
_AP = Approval.__table__.c  # type: ignore[attr-defined]
_PROMOTION = sa.select(Promotion.__table__).where(_P.id == sa.bindparam("id"))  # type: ignore[attr-defined]
_APPROVALS = (
    sa.select(Approval.__table__)  # type: ignore[attr-defined]
    .where(_AP.promotion_id == sa.bindparam("id"))
    .order_by(_AP.decided_at, _AP.id)
)
_SLOT = ActivePromotion.__table__.c  # type: ignore[attr-defined]
_SLOTS = (
    sa.select(_SLOT.environment, _P.id, _P.status)
    .join_from(ActivePromotion.__table__, Promotion.__table__, _P.id == _SLOT.promotion_id)  # type: ignore[attr-defined]
    .where(_SLOT.service == sa.bindparam("service"))
)


def promotion(db: Engine, promotion_id: str) -> Promotion | None:
    """The promotion's row as it is now, or None."""
    with reading(db) as conn:
        row = conn.execute(_PROMOTION, {"id": promotion_id}).first()
    return Promotion(**row._mapping) if row is not None else None


def promotion_and_approvals(db: Engine, promotion_id: str) -> tuple[Promotion | None, list[Approval]]:
    """The promotion's row and its approvals and rejections, oldest first, read together."""
    with reading(db) as conn:
        row = conn.execute(_PROMOTION, {"id": promotion_id}).first()
        if row is None:
            return None, []
        approvals = [Approval(**a._mapping) for a in conn.execute(_APPROVALS, {"id": promotion_id})]
    return Promotion(**row._mapping), approvals


def active_slots(db: Engine, service: str) -> dict[str, tuple[str, str]]:
    """The promotion holding each of the service's environment slots: environment -> (its id, its status)."""
    with reading(db) as conn:
        return {env: (pid, status) for env, pid, status in conn.execute(_SLOTS, {"service": service})}
