"""Artifact holds: an artifact taken out of circulation (after a verified rollback, or by hand)
cannot be promoted again until someone clears the hold with a reason. Both steps are audited;
the ``artifact_hold`` gate enforces the hold."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from storage import audit
from storage.ledger import HELD
from storage.models import Artifact

CLEARED = "artifact.hold_cleared"


def put_on_hold(s: Session, *, service: str, tag: str, reason: str, held_by: str, now: datetime,
                actor: str | None = None, promotion_id: str | None = None) -> bool:
    """Hold the artifact within the caller's transaction; False when it is unknown or already held."""
    artifact = s.exec(select(Artifact).where(Artifact.service == service, Artifact.tag == tag)).first()
    if artifact is None or artifact.hold_reason:
        return False
    artifact.hold_reason = reason
    s.add(artifact)
    audit.append(s, at=now, actor=actor or held_by, action=HELD, promotion_id=promotion_id, service=service,
                 detail={"tag": tag, "reason": reason, "held_by": held_by})
    return True


def clear_hold(s: Session, *, service: str, tag: str, reason: str, user: str, now: datetime) -> str | None:
    """Clear the hold within the caller's transaction; returns the reason it had, None if not held."""
    artifact = s.exec(select(Artifact).where(Artifact.service == service, Artifact.tag == tag)).first()
    if artifact is None or not artifact.hold_reason:
        return None
    previous, artifact.hold_reason = artifact.hold_reason, None
    s.add(artifact)
    audit.append(s, at=now, actor=user, action=CLEARED, service=service,
                 detail={"tag": tag, "reason": reason, "was_held_for": previous})
    return previous
