"""The values the tables store for statuses, kinds and decisions, as enums.

The rules for moving between promotion statuses live with the engine
(``bot.engine.states``); these are only the words, shared by every layer that
reads the tables (the metrics among them).
"""

from __future__ import annotations

import enum


class PromotionStatus(enum.StrEnum):
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


TERMINAL = frozenset(
    {
        PromotionStatus.VERIFIED,
        PromotionStatus.FAILED,
        PromotionStatus.REJECTED,
        PromotionStatus.EXPIRED,
        PromotionStatus.CANCELLED,
        PromotionStatus.SUPERSEDED,
        PromotionStatus.VOIDED,
    }
)

# states in which a promotion changed (or is changing) what the environment runs
WENT_AHEAD = frozenset(
    {
        PromotionStatus.APPROVED,
        PromotionStatus.DISPATCHED,
        PromotionStatus.DEPLOYED,
        PromotionStatus.VERIFIED,
        PromotionStatus.FAILED,
    }
)

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


class PromotionKind(enum.StrEnum):
    PROMOTION = "promotion"  # an artifact moving forward to the next environment
    ROLLBACK = "rollback"  # a known-good artifact coming back (the model: a rollback is a promotion)


class Decision(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    IN_FLIGHT = "in_flight"  # claimed by one instance until its lease runs out
    DONE = "done"  # dispatched (or no longer wanted: the promotion moved on)
    FAILED = "failed"  # given up; the promotion failed with the reason


class DeploymentStatus(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


class VerificationResult(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
