"""Reading a promotion back: the view a card is drawn from, and the promotion model's record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

from sqlmodel import Session, col, select

from bot.engine.context import EngineContext
from bot.engine.roles import ApprovalView, PromotionView
from checks.base import GateReport
from storage import rows
from storage.models import Approval, OutboxEntry, Promotion, Verification
from storage.statuses import Decision, OutboxStatus, PromotionKind, PromotionStatus, VerificationResult

# the outbox marks a wait for GitHub or the registry this way in last_error (see bot.engine.delivery)
WAITING_FOR_EVIDENCE = "waiting: "


def approvers_of(s: Session, promotion_id: str) -> list[str]:
    """Who approved, in the order they did."""
    return list(
        s.exec(
            select(col(Approval.approver))
            .where(col(Approval.promotion_id) == promotion_id, col(Approval.decision) == Decision.APPROVE.value)
            .order_by(col(Approval.decided_at))
        )
    )


def to_view(ctx: EngineContext, p: Promotion, approvals: list[Approval]) -> PromotionView:
    config = ctx.config
    svc = config.services.get(p.service)
    return PromotionView(
        id=p.id,
        kind=p.kind,
        service=p.service,
        tag=p.tag,
        digest=p.digest,
        source_commit=p.source_commit,
        source_environment=p.source_environment,
        target_environment=p.target_environment,
        status=p.status,
        requested_by=p.requested_by,
        requested_at=p.requested_at,
        approved_at=p.approved_at,
        dispatched_at=p.dispatched_at,
        completed_at=p.completed_at,
        expires_at=p.expires_at,
        required_approvals=p.required_approvals,
        approvers=tuple(ctx.approvers_for(p.target_environment, expedited=p.expedited)),
        approvals=tuple(ApprovalView(a.approver, a.decision, a.reason, a.decided_at) for a in approvals),
        reason=p.reason,
        decided_by=p.decided_by,
        channel=p.channel,
        message_ts=p.message_ts,
        pipeline_run_id=p.pipeline_run_id,
        run_url=p.run_url,
        repository=svc.repository if svc else "",
        replaces_tag=p.replaces_tag,
        report=GateReport.from_json(p.gate_report) if p.gate_report else None,
        dry_run=ctx.dispatcher.dry_run,
        expedited=p.expedited,
        expedite_reason=p.expedite_reason,
        preempts=p.preempts,
    )


def view(ctx: EngineContext, promotion_id: str) -> PromotionView | None:
    """Everything a card needs about one promotion, read in one session."""
    p, approvals = rows.promotion_and_approvals(ctx.db, promotion_id)
    if p is None:
        return None
    view = to_view(ctx, p, approvals)
    if p.status == PromotionStatus.APPROVED.value:
        with Session(ctx.db) as s:
            entry = s.exec(select(OutboxEntry).where(col(OutboxEntry.promotion_id) == p.id)).first()
        if entry is not None and entry.status == OutboxStatus.PENDING.value and entry.last_error:
            waiting = entry.last_error.removeprefix(WAITING_FOR_EVIDENCE)
            view = replace(view, waiting=waiting, next_try_at=entry.next_attempt_at)
    return view


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


# promobot's statuses in the promotion model's words (a verified or failed promotion that a verified
# rollback later replaced reads ROLLED_BACK); see docs/promotion-record.schema.json
MODEL_STATUS = {
    PromotionStatus.VERIFIED: "SUCCESS",
    PromotionStatus.FAILED: "FAILED",
    PromotionStatus.REJECTED: "REJECTED",
    PromotionStatus.EXPIRED: "EXPIRED",
    PromotionStatus.CANCELLED: "CANCELLED",
    PromotionStatus.SUPERSEDED: "SUPERSEDED",
    PromotionStatus.VOIDED: "VOIDED",
    PromotionStatus.PENDING_APPROVAL: "PENDING_APPROVAL",
    PromotionStatus.APPROVED: "APPROVED",
    PromotionStatus.DISPATCHED: "DEPLOYING",
    PromotionStatus.DEPLOYED: "VERIFYING",
}
ROLLED_BACK = "ROLLED_BACK"


def _rolled_back_by(s: Session, p: Promotion) -> str | None:
    """The verified rollback that replaced ``p``'s artifact in its environment after it, if any."""
    if p.kind != PromotionKind.PROMOTION.value or p.status not in (PromotionStatus.VERIFIED, PromotionStatus.FAILED):
        return None
    return s.exec(
        select(col(Promotion.id))
        .where(
            col(Promotion.kind) == PromotionKind.ROLLBACK.value,
            col(Promotion.service) == p.service,
            col(Promotion.target_environment) == p.target_environment,
            col(Promotion.replaces_tag) == p.tag,
            col(Promotion.status) == PromotionStatus.VERIFIED.value,
            col(Promotion.requested_at) >= p.requested_at,
        )
        .order_by(col(Promotion.requested_at))
        .limit(1)
    ).first()


def _verification_results(s: Session, p: Promotion) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """{environment: PASSED/FAILED}: the source environment's result the promotion relied on (the artifact's
    latest verification there when it was requested), and the target's own; plus the target's details."""
    results: dict[str, str] = {}
    if p.source_environment:
        source = s.exec(
            select(Verification)
            .where(
                col(Verification.service) == p.service,
                col(Verification.environment) == p.source_environment,
                col(Verification.tag) == p.tag,
                col(Verification.recorded_at) <= p.requested_at,
            )
            .order_by(col(Verification.recorded_at).desc(), col(Verification.id).desc())
            .limit(1)
        ).first()
        if source is not None:
            results[p.source_environment] = _word(source.result)
    own = s.exec(
        select(Verification).where(col(Verification.promotion_id) == p.id).order_by(col(Verification.finished_at))
    ).all()
    if own:
        results[p.target_environment] = _word(own[-1].result)
    details = [
        {
            "environment": v.environment,
            "result": _word(v.result),
            "checks": v.checks or {},
            "url": v.url,
            "finished_at": _iso(v.finished_at),
            "recorded_at": _iso(v.recorded_at),
        }
        for v in own
    ]
    return results, details


def _word(result: str) -> str:
    return "PASSED" if result == VerificationResult.PASSED else "FAILED"


def promotion_record(s: Session, p: Promotion) -> dict[str, Any]:
    """The promotion model's record (its "Promotion Audit Trail" fields, under its names and in its order),
    then promobot's extras: what the audit export and GET /api/v1/promotions/{id} return."""
    approvers = approvers_of(s, p.id)
    results, details = _verification_results(s, p)
    rolled_back_by = _rolled_back_by(s, p)
    return {
        "promotion_id": p.id,
        "artifact": {"name": p.service, "tag": p.tag, "digest": p.digest, "source_commit": p.source_commit},
        "source_environment": p.source_environment,
        "target_environment": p.target_environment,
        "promotion_requested_at": _iso(p.requested_at),
        "promotion_approved_at": _iso(p.approved_at),
        "promotion_completed_at": _iso(p.completed_at),
        # the approver whose approval completed it (N of M: every one is in "approvers")
        "approver": approvers[-1] if approvers else None,
        "pipeline_run_id": p.pipeline_run_id,
        "verification_results": results,
        "status": ROLLED_BACK if rolled_back_by else MODEL_STATUS[PromotionStatus(p.status)],
        # promobot's extras
        "kind": p.kind,
        "requested_by": p.requested_by,
        "approvers": approvers,
        "run_url": p.run_url,
        "reason": p.reason,
        "expedited": p.expedited,
        "expedite_reason": p.expedite_reason,
        "rolled_back_by": rolled_back_by,
        "promobot_status": p.status,
        "verifications": details,
    }


def record(ctx: EngineContext, promotion_id: str) -> dict[str, Any] | None:
    with Session(ctx.db) as s:
        p = s.get(Promotion, promotion_id)
        return promotion_record(s, p) if p is not None else None


def export(session: Session, since: datetime | None = None, fmt: Literal["json", "jsonl"] = "jsonl") -> Iterator[str]:
    """Promotion records of promotions requested at or after ``since``, oldest first: one line per record
    for ``jsonl``, the pieces of one JSON array for ``json``."""
    if fmt not in ("json", "jsonl"):
        raise ValueError(f"unknown export format {fmt!r}: expected json or jsonl")
    query = select(Promotion).order_by(col(Promotion.requested_at), col(Promotion.id))
    if since is not None:
        query = query.where(col(Promotion.requested_at) >= since)
    first = True
    for promotion in session.exec(query).yield_per(500):
        data = promotion_record(session, promotion)
        # the model's field order, then the extras: not sorted
        if fmt == "jsonl":
            yield json.dumps(data) + "\n"
        else:
            yield ("[\n" if first else ",\n") + json.dumps(data, indent=2)
        first = False
    if fmt == "json":
        yield "[]\n" if first else "\n]\n"
