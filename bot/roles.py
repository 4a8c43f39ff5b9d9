"""The small roles the promotion engine talks through; implementations live at the edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from checks.base import GateReport


@dataclass(frozen=True)
class ApprovalView:
    approver: str
    decision: str
    reason: str | None
    decided_at: Any


@dataclass(frozen=True)
class PromotionView:
    """Everything a card needs, read in one go; rendering is a pure function of this."""

    id: str
    kind: str
    service: str
    tag: str
    digest: str
    source_commit: str | None
    source_environment: str | None
    target_environment: str
    status: str
    requested_by: str
    requested_at: Any
    approved_at: Any
    dispatched_at: Any
    completed_at: Any
    expires_at: Any
    required_approvals: int
    approvers: tuple[str, ...]
    approvals: tuple[ApprovalView, ...]
    reason: str | None
    decided_by: str | None
    channel: str | None
    message_ts: str | None
    pipeline_run_id: str | None
    run_url: str | None
    repository: str
    replaces_tag: str | None
    report: GateReport | None
    dry_run: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def approved_by(self) -> list[str]:
        return [a.approver for a in self.approvals if a.decision == "approve"]

    @property
    def commit_url(self) -> str | None:
        return f"https://github.com/{self.repository}/commit/{self.source_commit}" if self.source_commit else None


class Notifier(Protocol):
    """Where people see promotions: Slack, or the terminal in ``promobot shell``."""

    async def promotion_requested(self, view: PromotionView, approver_users: list[str]) -> tuple[str | None, str | None]:
        """Post the approval card (and tell the approvers); return (channel, message ts)."""
        ...

    async def promotion_changed(self, view: PromotionView, note: str | None = None) -> None:
        """Redraw the card in place and post ``note`` in its thread."""
        ...

    async def alert(self, channel: str, text: str) -> None: ...

    async def tell(self, user: str, text: str) -> None: ...


class ApproverDirectory(Protocol):
    async def expand(self, ids: list[str]) -> set[str]:
        """User ids for a list of user and user-group ids."""
        ...
