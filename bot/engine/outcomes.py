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
