"""Rolling back during an incident: a rollback requested while a bad deploy still awaits its verification.

Without this, the deploy holds its environment's one slot until its verification arrives or its
``verification_deadline`` (1 h by default) runs out, and ``/rollback`` could only say "wait". Instead:

- the rollback request takes the slot, and remembers the deploy it will end (``Promotion.preempts``);
  the deploy is still followed: its verification, if it comes, moves it as before (``tracked``);
- approving the rollback ends the deploy's wait in the same transaction (``end_wait``): the deploy
  moves from deployed to failed, "rolled back by … before its verification finished", with its own
  audit event, and no second (automatic) rollback is queued for it;
- a rollback that ends without approval (rejected, cancelled, expired, voided) gives the slot back to
  the deploy if it still waits (``bot.engine.transitions.release_slot``).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from bot.engine.transitions import move
from storage import audit
from storage.models import ActivePromotion, Promotion
from storage.statuses import PromotionKind
from storage.statuses import PromotionStatus as S


def preemptable(in_flight: Promotion, kind: str) -> str | None:
    """The promotion a new request may take the slot from: a deploy awaiting verification, by a rollback."""
    if kind == PromotionKind.ROLLBACK.value and in_flight.status == S.DEPLOYED.value:
        return in_flight.id
    return None


def note_rollback_requested(s: Session, bad_id: str, rollback_id: str, requester: str, now: datetime) -> None:
    """On the deploy's own record: a rollback was requested while it awaited verification."""
    bad = s.get(Promotion, bad_id)
    assert bad is not None
    audit.append(
        s,
        at=now,
        actor=requester,
        action=f"{bad.kind}.rollback_requested",
        promotion_id=bad.id,
        service=bad.service,
        environment=bad.target_environment,
        detail={"rollback_id": rollback_id, "status": bad.status},
    )


def tracked(s: Session, service: str, environment: str, tag: str, states: tuple[S, ...]) -> Promotion | None:
    """The promotion a deployment or verification of ``tag`` in ``environment`` moves: the one holding the
    slot, or the deploy a rollback holding the slot will end, if it is about ``tag`` and in ``states``."""
    active = s.get(ActivePromotion, (service, environment))
    holder = s.get(Promotion, active.promotion_id) if active is not None else None
    if holder is None:
        return None
    candidates: list[Promotion | None] = [holder]
    if holder.preempts:
        candidates.append(s.get(Promotion, holder.preempts))
    wanted = {st.value for st in states}
    return next((p for p in candidates if p is not None and p.tag == tag and p.status in wanted), None)


def end_wait(s: Session, rollback: Promotion, *, actor: str, approvers: list[str], now: datetime) -> str | None:
    """Within the rollback's approval: end the wait of the deploy it preempts. Returns that promotion's id
    when it was still waiting (and is now failed)."""
    if not rollback.preempts:
        return None
    bad = s.get(Promotion, rollback.preempts)
    if bad is None:
        return None
    moved = move(
        s,
        bad,
        S.DEPLOYED,
        S.FAILED,
        at=now,
        actor=actor,
        action=f"{bad.kind}.preempted",
        detail={"rollback_id": rollback.id, "approvers": approvers},
        completed_at=now,
        reason=f"rolled back by {rollback.id} before its verification finished",
    )
    return bad.id if moved else None
