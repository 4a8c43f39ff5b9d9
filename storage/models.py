"""Tables. Every timestamp is stored as UTC (see ``UTCDateTime``).

Table models only; input/output shapes live with the handlers that use them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from storage.statuses import PromotionKind


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index))


def _json() -> Any:
    return Field(default=None, sa_column=sa.Column(sa.JSON(), nullable=True))


class Artifact(SQLModel, table=True):
    """An immutable build output, as reported by ``artifact.built``."""

    __table_args__ = (sa.UniqueConstraint("service", "tag", name="uq_artifact_service_tag"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    service: str = Field(index=True)
    tag: str
    digest: str
    commit_sha: Optional[str] = None
    pipeline_run_id: Optional[str] = None
    built_at: Optional[datetime] = _ts(nullable=True)
    recorded_at: datetime = _ts()
    hold_reason: Optional[str] = None  # set when a rollback took this artifact out of circulation


class Deployment(SQLModel, table=True):
    """A deploy workflow's outcome in one environment (``deployment.finished`` or tracking)."""

    __table_args__ = (
        sa.Index("ix_deployment_lookup", "service", "environment", "finished_at"),
        sa.Index("ix_deployment_finished_at", "finished_at"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    service: str
    tag: str
    environment: str
    status: str  # success | failure
    run_id: Optional[str] = None
    url: Optional[str] = None
    promotion_id: Optional[str] = Field(default=None, index=True)
    finished_at: datetime = _ts()
    recorded_at: datetime = _ts()


class Verification(SQLModel, table=True):
    """Post-deploy verification in one environment (``verification.finished``)."""

    __table_args__ = (
        sa.Index("ix_verification_lookup", "service", "environment", "finished_at"),
        sa.Index("ix_verification_finished_at", "finished_at"),
        sa.Index("ix_verification_artifact", "service", "tag", "environment"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    service: str
    tag: str
    environment: str
    result: str  # passed | failed
    checks: Optional[dict] = _json()
    url: Optional[str] = None
    promotion_id: Optional[str] = Field(default=None, index=True)
    finished_at: datetime = _ts()
    recorded_at: datetime = _ts()


class ScanReport(SQLModel, table=True):
    """A vulnerability scan normalised to findings (``scan.finished``)."""

    id: Optional[int] = Field(default=None, primary_key=True)
    service: str = Field(index=True)
    tag: str
    digest: Optional[str] = None
    scanner: str
    findings: Optional[list] = _json()
    received_at: datetime = _ts()


class SbomReport(SQLModel, table=True):
    """An SBOM normalised to components and their licenses (``sbom.published``)."""

    id: Optional[int] = Field(default=None, primary_key=True)
    service: str = Field(index=True)
    tag: str
    digest: Optional[str] = None
    format: str
    components: Optional[list] = _json()
    received_at: datetime = _ts()


class Promotion(SQLModel, table=True):
    """One request to move an artifact into an environment (a rollback is one too)."""

    # the metrics and digests aggregate over these timestamps
    __table_args__ = (
        sa.Index("ix_promotion_requested_at", "requested_at"),
        sa.Index("ix_promotion_approved_at", "approved_at"),
        sa.Index("ix_promotion_completed_at", "completed_at"),
        sa.Index("ix_promotion_pipeline_run_id", "pipeline_run_id"),
    )
    id: str = Field(primary_key=True)
    kind: str = PromotionKind.PROMOTION.value  # promotion | rollback
    service: str = Field(index=True)
    tag: str
    digest: str
    source_commit: Optional[str] = None
    source_environment: Optional[str] = None
    target_environment: str
    status: str = Field(index=True)
    requested_by: str
    requested_at: datetime = _ts()
    approved_at: Optional[datetime] = _ts(nullable=True)
    dispatched_at: Optional[datetime] = _ts(nullable=True)
    completed_at: Optional[datetime] = _ts(nullable=True)
    expires_at: Optional[datetime] = _ts(nullable=True)
    required_approvals: int = 1
    reason: Optional[str] = None  # why it was requested (rollbacks) or why it ended
    decided_by: Optional[str] = None  # who rejected/cancelled/revoked
    channel: Optional[str] = None
    message_ts: Optional[str] = None
    pipeline_run_id: Optional[str] = None
    run_url: Optional[str] = None
    gate_report: Optional[dict] = _json()
    replaces_tag: Optional[str] = None  # what the target environment ran when requested
    version: int = 1
    # an expedited promotion (the model's exception for critical security patches) and why it was asked for
    expedited: bool = Field(default=False, sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false()))
    expedite_reason: Optional[str] = None
    # a rollback requested while that deploy awaited its verification: approving the rollback ends the wait
    preempts: Optional[str] = None


class Approval(SQLModel, table=True):
    """One approver's decision on one promotion."""

    __table_args__ = (sa.UniqueConstraint("promotion_id", "approver", name="uq_approval_once"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    promotion_id: str = Field(index=True)
    approver: str
    decision: str  # approve | reject | revoke
    reason: Optional[str] = None
    decided_at: datetime = _ts()


class ActivePromotion(SQLModel, table=True):
    """At most one active promotion per (service, environment): the primary key says so."""

    service: str = Field(primary_key=True)
    environment: str = Field(primary_key=True)
    promotion_id: str


class OutboxEntry(SQLModel, table=True):
    """A dispatch that must happen exactly once, written in the approval's transaction."""

    id: Optional[int] = Field(default=None, primary_key=True)
    promotion_id: str = Field(unique=True)
    kind: str = "dispatch"
    status: str = Field(default="pending", index=True)  # pending | in_flight | done | failed
    attempts: int = 0
    claimed_by: Optional[str] = None
    claimed_until: Optional[datetime] = _ts(nullable=True)
    next_attempt_at: datetime = _ts()
    last_error: Optional[str] = None
    created_at: datetime = _ts()
    completed_at: Optional[datetime] = _ts(nullable=True)
    sending_at: Optional[datetime] = _ts(nullable=True)  # the latest dispatch that may have started a run
    sends: int = 0  # dispatch calls made (attempts counts claims)


class PipelineEvent(SQLModel, table=True):
    """Seen pipeline event ids: a resend with the same ``event_id`` is harmless."""

    event_id: str = Field(primary_key=True)
    type: str
    body_sha256: str
    received_at: datetime = _ts()


class EnvironmentLock(SQLModel, table=True):
    service: str = Field(primary_key=True)
    environment: str = Field(primary_key=True)
    locked_by: str
    reason: str
    locked_at: datetime = _ts()


class AuditHead(SQLModel, table=True):
    """The chain's tip. Writers lock this row first (an UPDATE, or SELECT … FOR UPDATE), which serialises them."""

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    last_hash: str = ""


class AuditEvent(SQLModel, table=True):
    """Append-only, hash-chained record of every step."""

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = _ts(index=True)
    actor: str
    action: str = Field(index=True)
    promotion_id: Optional[str] = Field(default=None, index=True)
    service: Optional[str] = None
    environment: Optional[str] = None
    detail: Optional[dict] = _json()
    prev_hash: str
    hash: str
    keyed: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})  # HMAC (PROMOBOT_AUDIT_KEY)


class JobClaim(SQLModel, table=True):
    """A scheduled job run claimed by one replica (digests, purges)."""

    job: str = Field(primary_key=True)
    run_key: str = Field(primary_key=True)
    claimed_by: str
    claimed_at: datetime = _ts()
    completed_at: Optional[datetime] = _ts(nullable=True)  # set once the run's work is surely done (digests)


class AuditAnchor(SQLModel, table=True):
    """Where the audit chain starts after a purge: the last purged event's seq and hash."""

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})  # last event purged
    hash: str  # that event's hash: the first remaining event's prev_hash
    first_seq: int  # first event this purge removed
    first_prev_hash: str  # the link before it: GENESIS or the previous anchor's hash
    events: int
    archive: str  # the archive file the purged events were written to
    purged_at: datetime = _ts()


class AuthorizedRun(SQLModel, table=True):
    """The one workflow run (and attempt) a promotion lets deploy: the primary key makes it one per promotion."""

    promotion_id: str = Field(primary_key=True)
    repository: str
    run_id: str
    run_attempt: int
    environment: str
    digest: str
    source: str  # authorize | protection_rule: which asked first
    authorized_at: datetime = _ts()


class DeployDecision(SQLModel, table=True):
    """Every answer to a deploy that asked whether it may go ahead (the authorize route, a protection rule)."""

    __table_args__ = (sa.Index("ix_deploydecision_run", "repository", "run_id"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    source: str  # authorize | protection_rule
    repository: str
    run_id: str
    run_attempt: Optional[int] = None  # GitHub's, when the run was read
    run_actor: Optional[str] = None
    service: Optional[str] = None
    environment: str
    digest: Optional[str] = None
    promotion_id: Optional[str] = Field(default=None, index=True)
    allowed: bool
    reason: str  # authorized, or the denial's rule (wrong_actor, another_run, …)
    message: str
    decided_at: datetime = _ts()


class ProtectionRuleReview(SQLModel, table=True):
    """A ``deployment_protection_rule`` request and promobot's answer to it, kept until GitHub took the answer
    (the tracking pass decides again or resends what could not be decided or sent)."""

    __table_args__ = (sa.Index("ix_protectionrulereview_open", "answered_at", "requested_at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    repository: str
    run_id: str
    environment: str
    delivery_id: Optional[str] = None
    state: Optional[str] = None  # approved | rejected, once decided
    comment: Optional[str] = None
    attempts: int = 0
    last_error: Optional[str] = None
    requested_at: datetime = _ts()
    answered_at: Optional[datetime] = _ts(nullable=True)


class OutOfBandReport(SQLModel, table=True):
    """A deployment or verification reported into an environment where no promobot promotion dispatched it.
    Recorded and flagged, never evidence: it is kept out of the Deployment and Verification tables that the
    gates, /status, rollback targets and the metrics read."""

    __table_args__ = (sa.Index("ix_outofbandreport_lookup", "service", "environment", "reported_at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    event_id: Optional[str] = Field(default=None, unique=True)
    kind: str  # deployment | verification
    service: str
    tag: str
    environment: str
    outcome: str  # success | failure (deployment), passed | failed (verification)
    run_id: Optional[str] = None
    url: Optional[str] = None
    promotion_id: Optional[str] = None  # the promotion the report named, if any
    reason: str  # why it is not linked to the promotion promobot dispatched
    accepted: bool  # false: the environment refuses out-of-band reports (policy.out_of_band_environments)
    reported_by: str
    finished_at: datetime = _ts()
    reported_at: datetime = _ts()
