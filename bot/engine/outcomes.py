"""What the engine answers to a request or a decision: whether anything changed, and the sentence to show."""

from __future__ import annotations

from dataclasses import dataclass

from checks.base import GateReport


@dataclass(frozen=True)
class RequestResult:
    outcome: str  # refused | requested | approved
    report: GateReport
    promotion_id: str | None = None
    message: str = ""


@dataclass(frozen=True)
class DecisionResult:
    changed: bool
    message: str  # mrkdwn, already escaped
    promotion_id: str | None = None
    approvals: int | None = None  # a recorded approval: how many the promotion had with it, in commit order
    required: int | None = None  # … and how many it needs

    @property
    def short_of_required(self) -> bool:
        """A recorded approval that did not bring the promotion to the number of approvals it needs."""
        return self.approvals is not None and self.required is not None and self.approvals < self.required
