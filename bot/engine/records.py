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
from storage.models import Approval, OutboxEntry, Promotion, Verification
from storage.statuses import Decision, OutboxStatus, PromotionStatus

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
    env = config.environment(p.target_environment) if p.target_environment in config.environment_names else None
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
        approvers=tuple(env.approvers if env else ()),
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
    )


def view(ctx: EngineContext, promotion_id: str) -> PromotionView | None:
    """Everything a card needs about one promotion, read in one session."""
    with Session(ctx.db) as s:
        p = s.get(Promotion, promotion_id)
        if p is None:
            return None
        approvals = list(
            s.exec(
                select(Approval).where(col(Approval.promotion_id) == promotion_id).order_by(col(Approval.decided_at))
            ).all()
        )
        view = to_view(ctx, p, approvals)
        if p.status == PromotionStatus.APPROVED.value:
            entry = s.exec(select(OutboxEntry).where(col(OutboxEntry.promotion_id) == p.id)).first()
            if entry is not None and entry.status == OutboxStatus.PENDING.value and entry.last_error:
                waiting = entry.last_error.removeprefix(WAITING_FOR_EVIDENCE)
                view = replace(view, waiting=waiting, next_try_at=entry.next_attempt_at)
        return view


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def promotion_record(s: Session, p: Promotion) -> dict[str, Any]:
    """The promotion model's record: what the audit export and GET /api/v1/promotions/{id} return."""
    approvers = approvers_of(s, p.id)
    verifications = s.exec(
        select(Verification).where(col(Verification.promotion_id) == p.id).order_by(col(Verification.finished_at))
    ).all()
    return {
        "promotion_id": p.id,
        "kind": p.kind,
        "artifact": {"name": p.service, "tag": p.tag, "digest": p.digest, "source_commit": p.source_commit},
        "source_environment": p.source_environment,
        "target_environment": p.target_environment,
        "requested_by": p.requested_by,
        "requested_at": _iso(p.requested_at),
        "approved_at": _iso(p.approved_at),
        "completed_at": _iso(p.completed_at),
        "approver": approvers[0] if len(approvers) == 1 else (approvers or None),
        "pipeline_run_id": p.pipeline_run_id,
        "run_url": p.run_url,
        "verification_results": [
            {"result": v.result, "checks": v.checks or {}, "url": v.url, "finished_at": _iso(v.finished_at)}
            for v in verifications
        ],
        "status": p.status,
        "reason": p.reason,
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
        if fmt == "jsonl":
            yield json.dumps(data, sort_keys=True) + "\n"
        else:
            yield ("[\n" if first else ",\n") + json.dumps(data, indent=2, sort_keys=True)
        first = False
    if fmt == "json":
        yield "[]\n" if first else "\n]\n"
