"""The promotion's state machine: the pure rules for moving between statuses.

``TRANSITIONS`` is the whole state machine: ``bot.engine.transitions.move`` is the
one function that changes a promotion's status, and it refuses any move this
table does not list. The status words themselves are stored values
(``storage.statuses``).
"""

from __future__ import annotations

from storage.statuses import DeploymentStatus, PromotionStatus, VerificationResult

# Which states each state may move to. Anything else is a bug or a stale click.
TRANSITIONS: dict[PromotionStatus, frozenset[PromotionStatus]] = {
    PromotionStatus.PENDING_APPROVAL: frozenset(
        {
            PromotionStatus.APPROVED,
            PromotionStatus.REJECTED,
            PromotionStatus.EXPIRED,
            PromotionStatus.CANCELLED,
            PromotionStatus.SUPERSEDED,
            PromotionStatus.VOIDED,
        }
    ),
    PromotionStatus.APPROVED: frozenset(
        {PromotionStatus.DISPATCHED, PromotionStatus.VOIDED, PromotionStatus.FAILED, PromotionStatus.CANCELLED}
    ),
    PromotionStatus.DISPATCHED: frozenset({PromotionStatus.DEPLOYED, PromotionStatus.FAILED, PromotionStatus.VERIFIED}),
    PromotionStatus.DEPLOYED: frozenset({PromotionStatus.VERIFIED, PromotionStatus.FAILED}),
}


def can_move(current: PromotionStatus, target: PromotionStatus) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def after_deployment(status: str) -> PromotionStatus:
    return PromotionStatus.DEPLOYED if status == DeploymentStatus.SUCCESS else PromotionStatus.FAILED


def after_verification(result: str) -> PromotionStatus:
    return PromotionStatus.VERIFIED if result == VerificationResult.PASSED else PromotionStatus.FAILED


def approvals_complete(approvals: int, required: int) -> bool:
    return approvals >= required
