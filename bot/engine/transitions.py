"""The one way a promotion's status changes: ``move``.

A move is a compare-and-set (``UPDATE … WHERE status = <from>``) inside the
caller's transaction, checked against the state table first, and it writes its
audit event in that same transaction. Two clicks, two replicas or a restart can
therefore never move a promotion twice, and no move happens unrecorded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from bot.engine.states import can_move
from storage import audit
from storage.db import rowcount
from storage.models import ActivePromotion, Promotion
from storage.statuses import PromotionStatus


class IllegalTransition(Exception):
    """A move the state table does not allow: a bug, never a user's mistake."""


def move(
    s: Session,
    p: Promotion,
    source: PromotionStatus,
    target: PromotionStatus,
    *,
    at: datetime,
    actor: str,
    action: str,
    detail: dict[str, Any] | None = None,
    before: datetime | None = None,
    **values: Any,
) -> bool:
    """Move ``p`` from ``source`` to ``target`` if it is still in ``source`` (and, with ``before``, only while
    its approval deadline ``expires_at`` is later than ``before``); write ``action`` to the audit trail when it
    moved. Returns whether it moved; raises IllegalTransition for a move the table forbids."""
    if not can_move(source, target):
        raise IllegalTransition(f"{p.id}: {source.value} → {target.value} is not a promotion transition")
    conditions = [col(Promotion.id) == p.id, col(Promotion.status) == source.value]
    if before is not None:
        # the deadline is part of the compare-and-set itself: nothing that ran before it can stretch it
        conditions.append(sa.or_(col(Promotion.expires_at).is_(None), col(Promotion.expires_at) > before))
    result = s.execute(
        sa.update(Promotion)
        .where(*conditions)
        .values(status=target.value, version=col(Promotion.version) + 1, **values)
    )
    if rowcount(result) != 1:
        return False
    audit.append(
        s,
        at=at,
        actor=actor,
        action=action,
        promotion_id=p.id,
        service=p.service,
        environment=p.target_environment,
        detail=detail,
    )
    return True


def lock_row(s: Session, promotion_id: str, status: PromotionStatus) -> bool:
    """Lock the promotion's row while it is in ``status`` (serialises concurrent approvers and reporters)."""
    result = s.execute(
        sa.update(Promotion)
        .where(col(Promotion.id) == promotion_id, col(Promotion.status) == status.value)
        .values(version=col(Promotion.version) + 1)
    )
    return rowcount(result) == 1


def release_slot(s: Session, p: Promotion) -> None:
    """Free the (service, environment) slot: the promotion no longer blocks a new one. A rollback that took
    the slot from a deploy awaiting verification (``bot.engine.incident``) gives it back if that deploy
    still waits: it ended without being approved, so the deploy is followed as before."""
    s.execute(sa.delete(ActivePromotion).where(col(ActivePromotion.promotion_id) == p.id))
    if not p.preempts:
        return
    waiting = s.execute(sa.select(col(Promotion.status)).where(col(Promotion.id) == p.preempts)).scalar_one_or_none()
    if waiting == PromotionStatus.DEPLOYED.value and s.get(ActivePromotion, (p.service, p.target_environment)) is None:
        s.add(ActivePromotion(service=p.service, environment=p.target_environment, promotion_id=p.preempts))
