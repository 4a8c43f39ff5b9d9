"""One promotion's rows, read by key with prepared Core statements.

A click reads its promotion before Slack is acknowledged, so this read is on the hot path: loading the
row through the ORM (``Session.get``) cost twice as much as the query. The objects returned are plain
instances of the table models, not attached to any session: read them, never add them back.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage.models import Approval, Promotion

_P = Promotion.__table__.c  # type: ignore[attr-defined]
_AP = Approval.__table__.c  # type: ignore[attr-defined]
_PROMOTION = sa.select(Promotion.__table__).where(_P.id == sa.bindparam("id"))  # type: ignore[attr-defined]
_APPROVALS = (
    sa.select(Approval.__table__)  # type: ignore[attr-defined]
    .where(_AP.promotion_id == sa.bindparam("id"))
    .order_by(_AP.decided_at, _AP.id)
)
_DECIDED = sa.select(_AP.id).where(
    _AP.promotion_id == sa.bindparam("id"),
    _AP.approver == sa.bindparam("user"),
    _AP.decision == sa.bindparam("decision"),
)


def promotion(db: Engine, promotion_id: str) -> Promotion | None:
    """The promotion's row as it is now, or None."""
    with db.connect() as conn:
        row = conn.execute(_PROMOTION, {"id": promotion_id}).first()
    return Promotion(**row._mapping) if row is not None else None


def promotion_and_approvals(db: Engine, promotion_id: str) -> tuple[Promotion | None, list[Approval]]:
    """The promotion's row and its approvals and rejections, oldest first, read together."""
    with db.connect() as conn:
        row = conn.execute(_PROMOTION, {"id": promotion_id}).first()
        if row is None:
            return None, []
        approvals = [Approval(**a._mapping) for a in conn.execute(_APPROVALS, {"id": promotion_id})]
    return Promotion(**row._mapping), approvals


def has_decided(db: Engine, promotion_id: str, user: str, decision: str) -> bool:
    """Whether ``user`` has recorded ``decision`` (approve or reject) on the promotion."""
    with db.connect() as conn:
        return conn.execute(_DECIDED, {"id": promotion_id, "user": user, "decision": decision}).first() is not None
