"""The small roles the promotion engine talks through; implementations live at the edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from checks.base import GateReport, Ledger
from checks.deployment_window import WindowState
from checks.soak_time import SoakProgress
from storage.records import (
    DeploymentRecord,
    HoldRecord,
    LockRecord,
    OutOfBandRecord,
    ServiceEvidence,
    VerificationRecord,
)
from storage.statuses import Decision


@dataclass(frozen=True)
class SourceCommit:
    sha: str
    title: str  # the first line that says what changed (a merge commit's pull request title)
    author: str
    pull_request: int | None = None


@dataclass(frozen=True)
class SourceChanges:
    """The commits in ``head_sha`` that are not in ``base_sha``: newest first, capped; ``total`` counts all."""

    base_sha: str
    head_sha: str
    commits: tuple[SourceCommit, ...]
    total: int
    compare_url: str | None = None
    repository_url: str | None = None


class SourceHistory(Protocol):
    """What changed between two commits of a repository (GitHub compare)."""

    async def commits_between(self, repository: str, base_sha: str, head_sha: str) -> SourceChanges:
        """Commits reachable from ``head_sha`` but not from ``base_sha``; raises SourceHostError."""
        ...


@dataclass(frozen=True)
class CardEvidence:
    """What an approver needs besides the gates, read when the card is drawn."""

    changes: SourceChanges | None = None
    changes_note: str | None = None  # why there is no commit list (first deployment, GitHub unreachable)
    rolled_back_changes: bool = False  # a rollback: ``changes`` are the commits it takes out
    replaces_digest: str | None = None
    previous_environment: str | None = None
    previous_deployments: tuple[DeploymentRecord, ...] = ()  # of this artifact, in previous_environment
    previous_verifications: tuple[VerificationRecord, ...] = ()
    target_deployments: tuple[DeploymentRecord, ...] = ()  # the target environment's latest, any artifact
    target_verifications: tuple[VerificationRecord, ...] = ()
    soak: SoakProgress | None = None
    window: WindowState | None = None
    hold: HoldRecord | None = None
    now: datetime | None = None


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
    waiting: str | None = None  # approved but not dispatched yet: what the outbox waits for
    next_try_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    evidence: CardEvidence | None = None  # filled in by ``bot.engine.card_evidence`` before a card is drawn
    expedited: bool = False  # an expedited promotion: the card says so in its header
    expedite_reason: str | None = None
    preempts: str | None = None  # the deploy awaiting verification that approving this rollback ends

    @property
    def approved_by(self) -> list[str]:
        return [a.approver for a in self.approvals if a.decision == Decision.APPROVE]

    @property
    def commit_url(self) -> str | None:
        return f"https://github.com/{self.repository}/commit/{self.source_commit}" if self.source_commit else None


class Notifier(Protocol):
    """Where people see promotions: Slack, or the terminal in ``promobot shell``."""

    async def promotion_requested(
        self, view: PromotionView, approver_users: list[str]
    ) -> tuple[str | None, str | None]:
        """Post the approval card (and tell the approvers); return (channel, message ts)."""
        ...

    async def promotion_changed(self, view: PromotionView, note: str | None = None) -> None:
        """Redraw the card in place and post ``note`` in its thread."""
        ...

    async def note(self, view: PromotionView, note: str) -> None:
        """Post ``note`` in the card's thread (in its channel when it has no card), leaving the card as it is."""
        ...

    async def alert(self, channel: str, text: str) -> None: ...

    async def tell(self, user: str, text: str) -> None: ...


class Records(Ledger, Protocol):
    """The ledger the gates read, plus the every-service reads of /status and App Home (one query each)."""

    def current_deployments(self) -> dict[tuple[str, str], DeploymentRecord]: ...

    def latest_verifications(self) -> dict[tuple[str, str], VerificationRecord]: ...

    def locks(self) -> list[LockRecord]: ...

    def held_tags(self) -> set[tuple[str, str]]: ...

    def out_of_band(self, service: str, environment: str) -> OutOfBandRecord | None:
        """The environment's out-of-band flag: the latest report since its latest in-band deployment."""
        ...

    def out_of_band_flags(self) -> dict[tuple[str, str], OutOfBandRecord]: ...

    def service_evidence(self, service: str) -> ServiceEvidence:
        """What ``/status SERVICE`` shows of one service, read at once."""
        ...

    def latest_verified_tags(self, service: str, environments: list[str]) -> dict[str, str | None]:
        """``latest_verified_tag`` of each environment, read at once."""
        ...


class ApproverDirectory(Protocol):
    async def expand(self, ids: list[str]) -> set[str]:
        """User ids for a list of user and user-group ids."""
        ...


# --- dispatching the deploy workflow -------------------------------------------------


@dataclass(frozen=True)
class DispatchRequest:
    repository: str
    workflow: str
    ref: str
    inputs: dict[str, str]

    @property
    def promotion_id(self) -> str:
        return self.inputs["promotion_id"]


@dataclass(frozen=True)
class RunInfo:
    """A workflow run as GitHub describes it (REST ``GET …/actions/runs/{id}`` or a ``workflow_run`` webhook)."""

    run_id: str | None
    url: str | None
    status: str | None = None  # queued | in_progress | completed
    conclusion: str | None = None  # success | failure | cancelled | ...
    title: str | None = None  # display_title: the rendered run-name, which carries the promotion id
    workflow_path: str | None = None  # ".github/workflows/deploy.yml", sometimes with "@ref" or an owner/repo prefix
    workflow_id: str | None = None
    event: str | None = None  # workflow_dispatch | push | pull_request | ...
    actor: str | None = None  # login of who started the run (a re-run keeps it)
    triggering_actor: str | None = None  # login of who started this attempt
    run_attempt: int | None = None
    head_branch: str | None = None


class DispatchError(Exception):
    """A dispatch that did not go through.

    ``retryable`` tells a passing fault (5xx, timeout, rate limit) from a refusal
    (unknown workflow, bad inputs) that no retry will fix. ``maybe_sent`` says the
    request may have reached GitHub, so a retry must reconcile first.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        maybe_sent: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.maybe_sent = maybe_sent
        self.retry_after = retry_after
        self.status = status


class Dispatcher(Protocol):
    """GitHub Actions as promobot uses it: dispatching the deploy workflow, reading runs, and answering the
    custom deployment protection rule. Every method raises DispatchError when GitHub does not answer."""

    dry_run: bool

    async def dispatch(self, request: DispatchRequest) -> RunInfo: ...

    async def find_run(self, request: DispatchRequest, *, since: datetime) -> RunInfo | None:
        """The run this promotion's dispatch created: a workflow_dispatch run of the workflow, started by
        promobot's own identity, with the promotion id in its name."""
        ...

    async def get_run(self, repository: str, run_id: str) -> RunInfo: ...

    async def own_login(self) -> str | None:
        """The GitHub login runs dispatched by promobot carry as their actor (a token's user, or an App's
        ``<slug>[bot]``); None when promobot has no GitHub identity (dry run)."""
        ...

    async def review_protection_rule(
        self, repository: str, run_id: str, environment: str, state: str, comment: str
    ) -> None:
        """Approve or reject the run's jobs held by promobot's custom deployment protection rule."""
        ...


def describe(request: DispatchRequest, *, dry_run: bool = False) -> str:
    """The dispatch in one line, for the card's thread and the shell."""
    inputs = " ".join(f"{k}={v}" for k, v in request.inputs.items())
    prefix = "[dry run] would dispatch" if dry_run else "dispatch"
    return f"{prefix} workflow_dispatch {request.repository} {request.workflow} @ {request.ref} with inputs: {inputs}"
