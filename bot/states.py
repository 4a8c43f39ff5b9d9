"""The promotion's states and the pure rules for moving between them."""

from __future__ import annotations

import enum


class PromotionStatus(str, enum.Enum):
    PENDING_APPROVAL = "pending_approval"  # card posted, waiting for approvers
    APPROVED = "approved"  # approvals complete; dispatch queued in the outbox
    DISPATCHED = "dispatched"  # workflow_dispatch accepted; run followed
    DEPLOYED = "deployed"  # deploy run succeeded; waiting for verification
    VERIFIED = "verified"  # verification passed: the promotion is complete
    FAILED = "failed"  # dispatch, deployment or verification failed
    REJECTED = "rejected"  # an approver said no
    EXPIRED = "expired"  # nobody approved within approval_ttl
    CANCELLED = "cancelled"  # the requester withdrew it
    SUPERSEDED = "superseded"  # a newer request for the same service and environment
    VOIDED = "voided"  # the evidence changed after the request: gates no longer hold

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def label(self) -> str:
        return LABELS[self]


TERMINAL = frozenset({PromotionStatus.VERIFIED, PromotionStatus.FAILED, PromotionStatus.REJECTED,
                      PromotionStatus.EXPIRED, PromotionStatus.CANCELLED, PromotionStatus.SUPERSEDED,
                      PromotionStatus.VOIDED})

LABELS = {
    PromotionStatus.PENDING_APPROVAL: "Waiting for approval",
    PromotionStatus.APPROVED: "Approved, dispatching",
    PromotionStatus.DISPATCHED: "Deploying",
    PromotionStatus.DEPLOYED: "Deployed, verifying",
    PromotionStatus.VERIFIED: "Verified",
    PromotionStatus.FAILED: "Failed",
    PromotionStatus.REJECTED: "Rejected",
    PromotionStatus.EXPIRED: "Expired",
    PromotionStatus.CANCELLED: "Cancelled",
    PromotionStatus.SUPERSEDED: "Superseded",
    PromotionStatus.VOIDED: "Voided",
}

# Which states each state may move to. Anything else is a bug or a stale click.
TRANSITIONS: dict[PromotionStatus, frozenset[PromotionStatus]] = {
    PromotionStatus.PENDING_APPROVAL: frozenset({PromotionStatus.APPROVED, PromotionStatus.REJECTED,
                                                 PromotionStatus.EXPIRED, PromotionStatus.CANCELLED,
                                                 PromotionStatus.SUPERSEDED, PromotionStatus.VOIDED}),
    PromotionStatus.APPROVED: frozenset({PromotionStatus.DISPATCHED, PromotionStatus.VOIDED,
                                         PromotionStatus.FAILED, PromotionStatus.CANCELLED}),
    PromotionStatus.DISPATCHED: frozenset({PromotionStatus.DEPLOYED, PromotionStatus.FAILED,
                                           PromotionStatus.VERIFIED}),
    PromotionStatus.DEPLOYED: frozenset({PromotionStatus.VERIFIED, PromotionStatus.FAILED}),
}


def can_move(current: PromotionStatus, target: PromotionStatus) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def after_deployment(status: str) -> PromotionStatus:
    return PromotionStatus.DEPLOYED if status == "success" else PromotionStatus.FAILED


def after_verification(result: str) -> PromotionStatus:
    return PromotionStatus.VERIFIED if result == "passed" else PromotionStatus.FAILED


def approvals_complete(approvals: int, required: int) -> bool:
    return approvals >= required
