"""The promotion engine: requests, gates, approvals, the dispatch outbox, pipeline outcomes.

Every state change happens in one database transaction together with its
audit event (and, for an approval, its outbox entry), using conditional
updates so that two clicks, two replicas or a restart can never move a
promotion twice. Notifications go out after the commit and never decide
anything.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot import rollback
from bot.config import PromobotConfig, format_duration
from bot.dispatch import DispatchError, DispatchRequest, Dispatcher, RunInfo, describe
from bot.roles import ApprovalView, ApproverDirectory, Notifier, PromotionView
from bot.holds import put_on_hold
from bot.text import esc, evidence_text, literal, mention
from bot.states import PromotionStatus as S, after_deployment, after_verification
from checks import runner
from checks.base import GateContext, GateReport, Ledger, Registry, SourceHost
from checks.catalog import gates_for
from storage import audit
from storage.db import transaction
from storage.models import (ActivePromotion, Approval, Artifact, Deployment, OutboxEntry, PipelineEvent,
                            Promotion, SbomReport, ScanReport, Verification)

log = logging.getLogger(__name__)

SYSTEM = "promobot"
# A claim must outlive everything one delivery can do (reconcile, gates, dispatch, finding the run):
# another replica may take an entry only when its claimer is surely gone.
OUTBOX_LEASE = timedelta(minutes=5)
RESUME_AFTER = timedelta(seconds=30)  # an approval older than this whose completion never ran is resumed
MAX_DISPATCH_ATTEMPTS = 8
CARD_GRACE = timedelta(seconds=30)  # an automatic promotion's dispatch waits this long at most for its card
RETRY_BACKOFF_BASE = 2.0  # seconds before the first retry; doubles each attempt, at most 300


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UserError(Exception):
    """A request that cannot be understood or served; the message says what was expected."""


class Conflict(Exception):
    """The request contradicts what is recorded (a tag reported with a second digest)."""


@dataclass(frozen=True)
class RequestResult:
    outcome: str  # refused | requested | approved
    report: GateReport
    promotion_id: str | None = None
    message: str = ""


@dataclass(frozen=True)
class DecisionResult:
    changed: bool
    message: str
    promotion_id: str | None = None


def closest(name: str, options: list[str]) -> str:
    near = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(f"`{n}`" for n in near) + "?"
    return "known: " + ", ".join(f"`{o}`" for o in sorted(options)[:20])


class PromotionService:
    def __init__(self, *, config: PromobotConfig, engine: Engine, ledger: Ledger, dispatcher: Dispatcher,
                 notifier: Notifier, directory: ApproverDirectory, registry: Registry | None = None,
                 source_host: SourceHost | None = None, clock: Callable[[], datetime] = utcnow,
                 instance_id: str = "promobot"):
        self.config = config
        self.engine = engine
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.notifier = notifier
        self.directory = directory
        self.registry = registry
        self.source_host = source_host
        self.clock = clock
        self.instance_id = instance_id
        self.outbox_wakeup = asyncio.Event()

    # --- reading -------------------------------------------------------------

    def service_config(self, service: str):
        if service not in self.config.services:
            raise UserError(f"Unknown service `{service}`: {closest(service, list(self.config.services))}")
        return self.config.services[service]

    def environment_config(self, environment: str):
        if environment not in self.config.environment_names:
            raise UserError(f"Unknown environment `{environment}`: "
                            f"{closest(environment, self.config.environment_names)}")
        return self.config.environment(environment)

    def resolve(self, service: str, tag: str | None, environment: str | None) -> tuple[str, str | None, str]:
        """Fill in what /promote leaves out: (tag, source environment, target environment)."""
        self.service_config(service)
        names = self.config.environment_names
        if environment is not None:
            self.environment_config(environment)
            source = self.config.previous_environment(environment)
            if tag is None:
                if source is None:
                    raise UserError(f"`{environment}` is the first environment: name the tag to promote "
                                    f"(`/promote {service} TAG to {environment}`).")
                tag = self.ledger.latest_verified_tag(service, source)
                if tag is None:
                    raise UserError(f"Nothing is verified in {source} for {service}, so there is nothing to "
                                    f"promote to {environment}. Name a tag, or verify one in {source} first.")
            return tag, source, environment
        if tag is not None:
            # the next environment after the last one where the tag is verified
            verified_in = [e for e in names if self.ledger.latest_verified_tag(service, e) == tag]
            if not verified_in:
                if self.ledger.artifact(service, tag) is None:
                    raise UserError(f"No artifact `{tag}` is recorded for {service}. Check the tag, or report "
                                    "it from the build with `promobot report artifact.built`.")
                return tag, None, names[0]
            last = verified_in[-1]
            target = self.config.next_environment(last)
            if target is None:
                raise UserError(f"`{tag}` is already verified in {last}, the last environment.")
            return tag, last, target
        for target in reversed(names[1:]):
            source = self.config.previous_environment(target)
            candidate = self.ledger.latest_verified_tag(service, source)
            if candidate and candidate != self.ledger.current_artifact(service, target):
                return candidate, source, target
        raise UserError(f"Nothing is waiting to be promoted for {service}: every verified artifact already runs "
                        "in the next environment. Name a tag: `/promote SERVICE TAG [to ENV]`.")

    def resolve_rollback(self, service: str, tag: str | None, environment: str | None) -> tuple[str, str]:
        """(tag, environment) for /rollback: by default the last known-good artifact of the last environment."""
        self.service_config(service)
        environment = environment or self.config.environment_names[-1]
        self.environment_config(environment)
        current = self.ledger.current_artifact(service, environment)
        latest = self.ledger.deployments(service, environment, limit=1)
        if latest and latest[0].status != "success":
            current = None  # a failed deploy leaves the environment in doubt: the last good one may come back
        passed = [v for v in self.ledger.verifications(service, environment, limit=200) if v.result == "passed"]
        if tag is None:
            # an artifact on hold was rolled back once already: it is not "known good"
            known_good = next((v.tag for v in passed if v.tag != current and self.ledger.hold(service, v.tag) is None),
                              None)
            if known_good is None:
                raise UserError(f"No earlier artifact of {service} was verified in {environment}, so there is "
                                f"nothing known-good to roll back to (it runs `{current or 'nothing'}`).")
            return known_good, environment
        if tag == current:
            raise UserError(f"{service} already runs `{tag}` in {environment}.")
        if not any(v.tag == tag for v in passed):
            raise UserError(f"`{tag}` was never verified in {environment}, so it is not a known-good artifact to "
                            f"roll back to. Omit the tag to take the last known-good one.")
        return tag, environment

    def _context(self, service: str, tag: str, source: str | None, target: str, kind: str) -> GateContext:
        return GateContext(service=service, tag=tag, target_environment=target, source_environment=source,
                           now=self.clock(), config=self.config, ledger=self.ledger, registry=self.registry,
                           source_host=self.source_host, kind=kind)

    async def check(self, service: str, tag: str | None = None, environment: str | None = None, *,
                    kind: str = "promotion") -> GateReport:
        """Evaluate every gate for the promotion; changes nothing."""
        tag, source, target = self.resolve(service, tag, environment)
        return await self._evaluate(service, tag, source, target, kind)

    async def _evaluate(self, service: str, tag: str, source: str | None, target: str, kind: str) -> GateReport:
        ctx = self._context(service, tag, source, target, kind)
        return await runner.evaluate(gates_for(self.config, target, kind=kind), ctx)

    def view(self, promotion_id: str) -> PromotionView | None:
        with Session(self.engine) as s:
            p = s.get(Promotion, promotion_id)
            if p is None:
                return None
            approvals = s.exec(select(Approval).where(Approval.promotion_id == promotion_id)
                               .order_by(col(Approval.decided_at))).all()
            return self._to_view(p, approvals)

    def _to_view(self, p: Promotion, approvals: list[Approval]) -> PromotionView:
        env = self.config.environment(p.target_environment) if p.target_environment in self.config.environment_names else None
        svc = self.config.services.get(p.service)
        return PromotionView(
            id=p.id, kind=p.kind, service=p.service, tag=p.tag, digest=p.digest, source_commit=p.source_commit,
            source_environment=p.source_environment, target_environment=p.target_environment, status=p.status,
            requested_by=p.requested_by, requested_at=p.requested_at, approved_at=p.approved_at,
            dispatched_at=p.dispatched_at, completed_at=p.completed_at, expires_at=p.expires_at,
            required_approvals=p.required_approvals, approvers=tuple(env.approvers if env else ()),
            approvals=tuple(ApprovalView(a.approver, a.decision, a.reason, a.decided_at) for a in approvals),
            reason=p.reason, decided_by=p.decided_by, channel=p.channel, message_ts=p.message_ts,
            pipeline_run_id=p.pipeline_run_id, run_url=p.run_url, repository=svc.repository if svc else "",
            replaces_tag=p.replaces_tag,
            report=_report_from_json(p.gate_report), dry_run=self.dispatcher.dry_run)

    def record(self, promotion_id: str) -> dict[str, Any] | None:
        """The promotion record in the promotion model's JSON shape."""
        with Session(self.engine) as s:
            p = s.get(Promotion, promotion_id)
            if p is None:
                return None
            return promotion_record(s, p)

    # --- requesting ----------------------------------------------------------

    async def request(self, requester: str, service: str, tag: str | None = None, environment: str | None = None,
                      *, kind: str = "promotion", reason: str | None = None) -> RequestResult:
        """Check the gates and, when they all pass, open a promotion (or refuse with every reason)."""
        svc = self.service_config(service)
        if kind == "rollback":
            tag, target = self.resolve_rollback(service, tag, environment)
            source = None
        else:
            tag, source, target = self.resolve(service, tag, environment)
        env = self.config.environment(target)
        in_flight = self._active(service, target)
        if in_flight is not None and in_flight.status != S.PENDING_APPROVAL.value:
            report = GateReport(service, tag, target, source, None, self.clock(), ())
            return RequestResult("refused", report, in_flight.id,
                                 f"Promotion `{in_flight.id}` of `{in_flight.tag}` to {target} is in progress "
                                 f"({S(in_flight.status).label.lower()}). Wait for it to finish, then ask again.")
        report = await self._evaluate(service, tag, source, target, kind)
        now = self.clock()
        if not report.eligible:
            with transaction(self.engine) as s:
                audit.append(s, at=now, actor=requester, action=f"{kind}.refused", service=service,
                             environment=target, detail={"tag": tag, "report": report.to_json(), "reason": reason})
            return RequestResult("refused", report, None, "")
        artifact = self.ledger.artifact(service, tag)
        manual = env.approval == "manual"
        promotion = Promotion(
            id=f"prm-{secrets.token_hex(5)}", kind=kind, service=service, tag=tag, digest=artifact.digest,
            source_commit=artifact.commit_sha, source_environment=source, target_environment=target,
            status=(S.PENDING_APPROVAL if manual else S.APPROVED).value, requested_by=requester,
            requested_at=now, approved_at=None if manual else now,
            expires_at=now + env.approval_ttl if manual else None,
            required_approvals=env.required_approvals if manual else 0, reason=reason,
            channel=svc.channel, gate_report=report.to_json(),
            replaces_tag=self.ledger.current_artifact(service, target))
        superseded: str | None = None
        try:
            with transaction(self.engine) as s:
                active = s.get(ActivePromotion, (service, target))
                if active is not None:
                    moved = _move(s, active.promotion_id, S.PENDING_APPROVAL, S.SUPERSEDED,
                                  reason=f"superseded by {promotion.id}", decided_by=requester)
                    if not moved:
                        raise UserError(f"Promotion `{active.promotion_id}` to {target} is already in progress. "
                                        "Wait for it to finish, then ask again.")
                    superseded = active.promotion_id
                    s.delete(active)
                    s.flush()
                    audit.append(s, at=now, actor=requester, action=f"{kind}.superseded", promotion_id=superseded,
                                 service=service, environment=target, detail={"by": promotion.id})
                s.add(promotion)
                s.add(ActivePromotion(service=service, environment=target, promotion_id=promotion.id))
                s.flush()
                audit.append(s, at=now, actor=requester, action=f"{kind}.requested", promotion_id=promotion.id,
                             service=service, environment=target,
                             detail={"tag": tag, "digest": artifact.digest, "source_environment": source,
                                     "reason": reason, "report": report.to_json()})
                if not manual:
                    audit.append(s, at=now, actor=SYSTEM, action=f"{kind}.approved", promotion_id=promotion.id,
                                 service=service, environment=target,
                                 detail={"approval": env.approval, "approvers": []})
                    # held until the card is posted (so the dispatch notice threads under it), at most CARD_GRACE
                    s.add(OutboxEntry(promotion_id=promotion.id, next_attempt_at=now + CARD_GRACE, created_at=now))
        except IntegrityError:
            raise UserError(f"Another promotion of {service} to {target} was opened at the same moment. "
                            "Run `/status` to see it.") from None
        if superseded:
            await self._announce(superseded,
                                 f"Superseded by a newer request `{promotion.id}` from {mention(requester)}.")
        view = self.view(promotion.id)
        approver_users = sorted(await self._approver_users(env.approvers)) if manual else []
        try:
            channel, ts = await self.notifier.promotion_requested(view, approver_users)
        except Exception:
            log.exception("could not post the card for %s", promotion.id)
            channel, ts = None, None
        if ts:
            with transaction(self.engine) as s:
                s.execute(sa.update(Promotion).where(Promotion.id == promotion.id)
                          .values(channel=channel, message_ts=ts))
        if not manual:
            with transaction(self.engine) as s:
                s.execute(sa.update(OutboxEntry).where(OutboxEntry.promotion_id == promotion.id,
                                                       OutboxEntry.status == "pending")
                          .values(next_attempt_at=self.clock()))
            self.outbox_wakeup.set()
            return RequestResult("approved", report, promotion.id,
                                 f"`{tag}` is going to {target} (approval: {env.approval}); promotion `{promotion.id}`.")
        return RequestResult("requested", report, promotion.id,
                             f"Requested promotion `{promotion.id}` of {service} `{tag}` to {target}; "
                             f"waiting for {env.required_approvals} approval(s).")

    def _active(self, service: str, environment: str) -> Promotion | None:
        with Session(self.engine) as s:
            active = s.get(ActivePromotion, (service, environment))
            return s.get(Promotion, active.promotion_id) if active else None

    async def _approver_users(self, ids: list[str]) -> set[str]:
        try:
            return await self.directory.expand(ids)
        except Exception:
            log.warning("could not resolve approver groups %s", ids, exc_info=True)
            return {i for i in ids if not i.startswith("S")}

    # --- deciding ------------------------------------------------------------

    async def approve(self, promotion_id: str, user: str) -> DecisionResult:
        """Record ``user``'s approval, then complete it: dispatch once enough approvals are in."""
        recorded = await self.record_approval(promotion_id, user)
        if not recorded.changed:
            return recorded
        return await self.complete_approval(promotion_id, user)

    async def record_approval(self, promotion_id: str, user: str) -> DecisionResult:
        """The fast, durable half of an approval (before Slack is acknowledged): no approval is lost
        if the process dies right after; ``resume_approvals`` completes it on restart."""
        p = self._promotion(promotion_id)
        if p is None:
            return DecisionResult(False, f"There is no promotion `{promotion_id}`.")
        refusal = await self.decision_refusal(p, user, "approve")
        if refusal:
            return DecisionResult(False, refusal, p.id)
        now = self.clock()
        with transaction(self.engine) as s:
            if not _touch(s, p.id, S.PENDING_APPROVAL):
                return DecisionResult(False, self._already(p.id), p.id)
            try:
                with s.begin_nested():
                    s.add(Approval(promotion_id=p.id, approver=user, decision="approve", decided_at=now))
            except IntegrityError:
                return DecisionResult(False, "You have already approved this promotion.", p.id)
            count = _approval_count(s, p.id)
            audit.append(s, at=now, actor=user, action=f"{p.kind}.approval", promotion_id=p.id, service=p.service,
                         environment=p.target_environment,
                         detail={"approvals": count, "required": p.required_approvals})
        return DecisionResult(True, f"Approval recorded: {count} of {p.required_approvals}.", p.id)

    async def complete_approval(self, promotion_id: str, actor: str) -> DecisionResult:
        """With enough approvals, check every gate again and queue the dispatch (or void)."""
        p = self._promotion(promotion_id)
        if p is None or p.status != S.PENDING_APPROVAL.value:
            return DecisionResult(False, self._already(promotion_id) if p else "gone", promotion_id)
        with Session(self.engine) as s:
            count = _approval_count(s, p.id)
        if count < p.required_approvals:
            await self._announce(p.id, f"<@{actor}> approved ({count} of {p.required_approvals}).")
            return DecisionResult(True, f"Approval recorded: {count} of {p.required_approvals}.", p.id)
        if p.expires_at is not None and self.clock() >= p.expires_at:
            await self.expire_due()  # approvals completed after the deadline do not count
            return DecisionResult(False, f"`{p.id}` expired at {p.expires_at:%Y-%m-%d %H:%M} UTC before its "
                                         "approval was complete; request it again.", p.id)
        report = await self._evaluate(p.service, p.tag, p.source_environment, p.target_environment, p.kind)
        now = self.clock()
        if not report.eligible:
            # only a pending request: once approved, the dispatch's own check decides (never two voiders)
            if self._void(p, report, actor, now, states=(S.PENDING_APPROVAL,)):
                await self._announce(p.id, f"Approval by <@{actor}> voided: the gates no longer hold.")
            return DecisionResult(True, "The evidence changed since the request; the gates no longer hold, "
                                        "so the promotion is void. See the card for why.", p.id)
        with transaction(self.engine) as s:
            if not _move(s, p.id, S.PENDING_APPROVAL, S.APPROVED, approved_at=now, gate_report=report.to_json()):
                return DecisionResult(False, self._already(p.id), p.id)
            # counted again under the row lock: an approval revoked while the gates ran must not count
            count = _approval_count(s, p.id)
            if count < p.required_approvals:
                s.rollback()
                return DecisionResult(False, f"An approval was revoked meanwhile: {count} of "
                                             f"{p.required_approvals}; `{p.id}` still waits for approval.", p.id)
            s.add(OutboxEntry(promotion_id=p.id, next_attempt_at=now, created_at=now))
            audit.append(s, at=now, actor=actor, action=f"{p.kind}.approved", promotion_id=p.id,
                         service=p.service, environment=p.target_environment,
                         detail={"approvers": self._approvers_of(s, p.id), "report": report.to_json()})
        await self._announce(p.id, f"Approved by <@{actor}>. Dispatching the deploy workflow.")
        self.outbox_wakeup.set()
        return DecisionResult(True, f"Approved `{p.id}`; dispatching.", p.id)

    async def resume_approvals(self) -> int:
        """Complete approvals that were recorded but not completed (the process died in between)."""
        with Session(self.engine) as s:
            rows = s.exec(select(Promotion.id, sa.func.max(Approval.approver))
                          .join(Approval, Approval.promotion_id == Promotion.id)
                          .where(Promotion.status == S.PENDING_APPROVAL.value, Approval.decision == "approve")
                          .group_by(Promotion.id, Promotion.required_approvals)
                          .having(sa.func.count(Approval.id) >= Promotion.required_approvals)
                          # a fresh approval is still being completed by the handler that recorded it
                          .having(sa.func.max(Approval.decided_at) <= self.clock() - RESUME_AFTER)).all()
        for promotion_id, approver in rows:
            await self.complete_approval(promotion_id, approver)
        return len(rows)

    async def reject(self, promotion_id: str, user: str, reason: str) -> DecisionResult:
        p = self._promotion(promotion_id)
        if p is None:
            return DecisionResult(False, f"There is no promotion `{promotion_id}`.")
        reason = (reason or "").strip()
        if not reason:
            return DecisionResult(False, "A rejection needs a reason, so the requester knows what to fix.", p.id)
        refusal = await self.decision_refusal(p, user, "reject")
        if refusal:
            return DecisionResult(False, refusal, p.id)
        now = self.clock()
        with transaction(self.engine) as s:
            if not _move(s, p.id, S.PENDING_APPROVAL, S.REJECTED, completed_at=now, reason=reason, decided_by=user):
                return DecisionResult(False, self._already(p.id), p.id)
            s.add(Approval(promotion_id=p.id, approver=user, decision="reject", reason=reason, decided_at=now))
            _release(s, p)
            audit.append(s, at=now, actor=user, action=f"{p.kind}.rejected", promotion_id=p.id, service=p.service,
                         environment=p.target_environment, detail={"reason": reason})
        await self._announce(p.id, f"Rejected by <@{user}>: {literal(reason)}")
        await self._tell(p.requested_by, f"Your promotion `{p.id}` of {p.service} `{p.tag}` to "
                                         f"{p.target_environment} was rejected by <@{user}>: {literal(reason)}")
        return DecisionResult(True, f"Rejected `{p.id}`.", p.id)

    async def cancel(self, promotion_id: str, user: str) -> DecisionResult:
        p = self._promotion(promotion_id)
        if p is None:
            return DecisionResult(False, f"There is no promotion `{promotion_id}`.")
        if user != p.requested_by:
            return DecisionResult(False, f"Only the requester <@{p.requested_by}> can cancel `{p.id}`.", p.id)
        now = self.clock()
        with transaction(self.engine) as s:
            if not _move(s, p.id, S.PENDING_APPROVAL, S.CANCELLED, completed_at=now, decided_by=user,
                         reason="cancelled by the requester"):
                return DecisionResult(False, self._already(p.id), p.id)
            _release(s, p)
            audit.append(s, at=now, actor=user, action=f"{p.kind}.cancelled", promotion_id=p.id,
                         service=p.service, environment=p.target_environment)
        await self._announce(p.id, f"Cancelled by <@{user}>.")
        return DecisionResult(True, f"Cancelled `{p.id}`.", p.id)

    async def revoke_approval(self, promotion_id: str, user: str) -> DecisionResult:
        """Withdraw ``user``'s approval while the promotion still waits for approvals (the count goes
        back down); once it is approved and queued or dispatched, refuse and say what to do instead."""
        p = self._promotion(promotion_id)
        if p is None:
            return DecisionResult(False, f"There is no promotion `{esc(promotion_id)}`. Expected "
                                         "`/promote revoke PROMOTION_ID` (the id is on the card's last line).")
        now = self.clock()
        with transaction(self.engine) as s:
            if not _touch(s, p.id, S.PENDING_APPROVAL):
                return DecisionResult(False, self._revoke_refusal(p.id), p.id)
            removed = s.execute(sa.delete(Approval).where(Approval.promotion_id == p.id, Approval.approver == user,
                                                          Approval.decision == "approve")).rowcount
            if not removed:
                return DecisionResult(False, f"You have not approved `{p.id}`, so there is nothing to revoke.", p.id)
            count = _approval_count(s, p.id)
            audit.append(s, at=now, actor=user, action=f"{p.kind}.approval_revoked", promotion_id=p.id,
                         service=p.service, environment=p.target_environment,
                         detail={"approvals": count, "required": p.required_approvals})
        await self._announce(p.id, f"<@{user}> revoked their approval ({count} of {p.required_approvals}).")
        return DecisionResult(True, f"Your approval of `{p.id}` is revoked: {count} of {p.required_approvals}.",
                              p.id)

    def _revoke_refusal(self, promotion_id: str) -> str:
        p = self._promotion(promotion_id)
        st = S(p.status)
        if st is S.APPROVED:
            return (f"`{p.id}` is already approved and its dispatch is queued: an approval can be revoked only "
                    f"while the request waits for approvals. To stop it before dispatch, lock the environment: "
                    f"`/promote lock {esc(p.service)} {p.target_environment} reason…` (the gates run again "
                    "right before dispatch).")
        if st in (S.DISPATCHED, S.DEPLOYED, S.VERIFIED):
            return (f"`{p.id}` was dispatched{f' at {p.dispatched_at:%Y-%m-%d %H:%M} UTC' if p.dispatched_at else ''}"
                    f": revoking cannot undo a deploy. To undo it: `/rollback {esc(p.service)} in "
                    f"{p.target_environment} reason…`.")
        return self._already(p.id)

    async def decision_refusal(self, p: Promotion, user: str, verb: str) -> str | None:
        if p.status != S.PENDING_APPROVAL.value:
            return self._already(p.id)
        if user == p.requested_by:
            return (f"You requested `{p.id}`, so you cannot {verb} it: another approver must. "
                    "You can cancel it instead.")
        env = self.config.environment(p.target_environment)
        allowed = await self._approver_users(env.approvers)
        if user not in allowed:
            who = ", ".join(f"<!subteam^{a}>" if a.startswith("S") else f"<@{a}>" for a in env.approvers)
            return (f"You are not an approver for {p.target_environment}. Approvers: {who}. "
                    "Ask one of them, or ask your platform team to add you in promobot.yml.")
        now = self.clock()
        if p.expires_at is not None and now >= p.expires_at:
            await self.expire_due()
            return (f"`{p.id}` expired at {p.expires_at:%Y-%m-%d %H:%M} UTC "
                    f"(approvals last {format_duration(env.approval_ttl)}). Ask the requester to request it again.")
        return None

    def _already(self, promotion_id: str) -> str:
        p = self._promotion(promotion_id)
        st = S(p.status)
        if st is S.PENDING_APPROVAL:
            return f"`{p.id}` is still waiting for approval."
        who = ""
        if st in (S.APPROVED, S.DISPATCHED, S.DEPLOYED, S.VERIFIED):
            with Session(self.engine) as s:
                names = self._approvers_of(s, p.id)
            who = " by " + ", ".join(f"<@{u}>" for u in names) if names else ""
            return f"`{p.id}` was already approved{who} ({st.label.lower()}); nothing changed."
        by = f" by <@{p.decided_by}>" if p.decided_by else ""
        return f"`{p.id}` is {st.label.lower()}{by}; nothing changed."

    @staticmethod
    def _approvers_of(s: Session, promotion_id: str) -> list[str]:
        return list(s.exec(select(Approval.approver).where(Approval.promotion_id == promotion_id,
                                                           Approval.decision == "approve")
                           .order_by(col(Approval.decided_at))))

    def _promotion(self, promotion_id: str) -> Promotion | None:
        with Session(self.engine) as s:
            return s.get(Promotion, promotion_id)

    def _void(self, p: Promotion, report: GateReport, actor: str, now: datetime, *,
              states: tuple[S, ...] = (S.PENDING_APPROVAL, S.APPROVED)) -> bool:
        reasons = "; ".join(f"{r.title}: {r.reason}" for r in report.blocking)
        with transaction(self.engine) as s:
            moved = any(_move(s, p.id, st, S.VOIDED, completed_at=now, reason=reasons, gate_report=report.to_json())
                        for st in states)
            if moved:
                _release(s, p)
                audit.append(s, at=now, actor=actor, action=f"{p.kind}.voided", promotion_id=p.id,
                             service=p.service, environment=p.target_environment,
                             detail={"report": report.to_json()})
        return moved

    async def expire_due(self) -> int:
        """Expire pending promotions whose approval_ttl has run out; returns how many."""
        now = self.clock()
        with Session(self.engine) as s:
            due = s.exec(select(Promotion).where(Promotion.status == S.PENDING_APPROVAL.value,
                                                 col(Promotion.expires_at) <= now)).all()
        expired = []
        for p in due:
            with transaction(self.engine) as s:
                if _move(s, p.id, S.PENDING_APPROVAL, S.EXPIRED, completed_at=now, reason="approval_ttl elapsed"):
                    _release(s, p)
                    audit.append(s, at=now, actor=SYSTEM, action=f"{p.kind}.expired", promotion_id=p.id,
                                 service=p.service, environment=p.target_environment)
                    expired.append(p)
        for p in expired:
            await self._announce(p.id, "Expired: nobody approved in time.")
            await self._tell(p.requested_by, f"Your promotion `{p.id}` of {p.service} `{p.tag}` to "
                                             f"{p.target_environment} expired without approval. Request it again "
                                             "if it is still wanted.")
        return len(expired)

    # --- the dispatch outbox ---------------------------------------------------

    def recover_own_claims(self) -> int:
        """After a restart, take back at once what this instance had claimed before it died."""
        with transaction(self.engine) as s:
            result = s.execute(sa.update(OutboxEntry)
                               .where(OutboxEntry.status == "in_flight", OutboxEntry.claimed_by == self.instance_id)
                               .values(claimed_until=self.clock() - timedelta(seconds=1)))
            return result.rowcount

    def _claim(self, entry_id: int) -> OutboxEntry | None:
        now = self.clock()
        with transaction(self.engine) as s:
            claimable = sa.or_(
                sa.and_(OutboxEntry.status == "pending", OutboxEntry.next_attempt_at <= now),
                sa.and_(OutboxEntry.status == "in_flight", OutboxEntry.claimed_until < now))
            # The attempt is counted before the call, so a crash mid-call is visible after restart.
            result = s.execute(sa.update(OutboxEntry).where(OutboxEntry.id == entry_id, claimable)
                               .values(status="in_flight", claimed_by=self.instance_id,
                                       claimed_until=now + OUTBOX_LEASE, attempts=OutboxEntry.attempts + 1))
            if result.rowcount != 1:
                return None
            return s.get(OutboxEntry, entry_id)

    async def process_outbox(self) -> int:
        """Deliver every due dispatch this instance can claim; returns how many it handled."""
        now = self.clock()
        with Session(self.engine) as s:
            ids = list(s.exec(select(OutboxEntry.id).where(sa.or_(
                sa.and_(OutboxEntry.status == "pending", OutboxEntry.next_attempt_at <= now),
                sa.and_(OutboxEntry.status == "in_flight", OutboxEntry.claimed_until < now)))
                .order_by(OutboxEntry.id).limit(20)))
        handled = 0
        for entry_id in ids:
            entry = self._claim(entry_id)
            if entry is None:
                continue
            handled += 1
            try:
                await self._deliver(entry)
            except Exception as exc:
                log.exception("outbox entry %s for %s failed unexpectedly", entry.id, entry.promotion_id)
                p = self._promotion(entry.promotion_id)
                if entry.attempts >= MAX_DISPATCH_ATTEMPTS and p is not None:
                    await self._fail_dispatch(entry, p, f"internal error: {type(exc).__name__} (see the bot's logs)")
                else:
                    self._reschedule(entry, "internal error (see logs)", None)
        return handled

    def _dispatch_request(self, p: Promotion) -> DispatchRequest:
        svc = self.config.services[p.service]
        return DispatchRequest(repository=svc.repository, workflow=svc.workflow, ref=svc.ref,
                               inputs={"environment": p.target_environment, "image_tag": p.tag,
                                       "image_digest": p.digest, "promotion_id": p.id})

    async def _deliver(self, entry: OutboxEntry) -> None:
        p = self._promotion(entry.promotion_id)
        if p is None or p.status != S.APPROVED.value:
            self._finish_entry(entry, "done" if p is not None else "failed", "promotion no longer approved")
            return
        request = self._dispatch_request(p)
        if entry.attempts > 1:
            # An earlier attempt may have reached GitHub before we lost track: never repeat blindly,
            # and look more than once (GitHub lists a new run a moment after accepting it).
            try:
                run = await self._find_after_dispatch(request, entry.created_at, delays=(0, 0.5, 1.5), strict=True)
            except DispatchError as exc:
                if exc.retryable and entry.attempts < MAX_DISPATCH_ATTEMPTS:
                    self._reschedule(entry, f"reconciling: {exc}", exc.retry_after)
                else:  # never dispatch again without knowing whether an earlier attempt went through
                    await self._fail_dispatch(entry, p, f"could not check whether an earlier attempt started "
                                                        f"a run ({exc}); look at the workflow's runs")
                return
            if run is not None:
                await self._mark_dispatched(entry, p, request, run, reconciled=True)
                return
        report = await self._evaluate(p.service, p.tag, p.source_environment, p.target_environment, p.kind)
        if not report.eligible:
            now = self.clock()
            if self._void(p, report, SYSTEM, now):
                await self._announce(p.id, "Not dispatched: the gates no longer hold (checked right before dispatch).")
            self._finish_entry(entry, "done", "voided before dispatch")
            return
        if not self._renew(entry):
            log.warning("outbox entry %s was taken over by another instance; not dispatching", entry.id)
            return
        try:
            run = await self.dispatcher.dispatch(request)
        except DispatchError as exc:
            if exc.retryable and entry.attempts < MAX_DISPATCH_ATTEMPTS:
                self._reschedule(entry, str(exc), exc.retry_after)
                return
            # the last attempt may have started a run all the same: look before calling it failed
            late = await self._find_after_dispatch(request, entry.created_at) if exc.maybe_sent else None
            if late is not None:
                await self._mark_dispatched(entry, p, request, late, reconciled=True)
                return
            await self._fail_dispatch(entry, p, str(exc))
            return
        if run.run_id is None and not self.dispatcher.dry_run:
            run = await self._find_after_dispatch(request, entry.created_at) or run
        await self._mark_dispatched(entry, p, request, run, reconciled=False)

    async def _find_after_dispatch(self, request: DispatchRequest, since: datetime, *,
                                   delays: tuple[float, ...] = (0.5, 1, 2, 4), strict: bool = False) -> RunInfo | None:
        """The run of this promotion's dispatch, looked for a few times (GitHub lists runs a moment late).
        ``strict`` raises the last DispatchError when no look succeeded, instead of answering None."""
        error: DispatchError | None = None
        answered = False
        for delay in delays:
            await asyncio.sleep(delay)
            try:
                run = await self.dispatcher.find_run(request, since=since)
            except DispatchError as exc:
                error = exc
                continue
            answered = True
            if run is not None:
                return run
        if strict and not answered and error is not None:
            raise error
        return None

    def _renew(self, entry: OutboxEntry) -> bool:
        """Extend this instance's claim before a call that may send; False if the claim was lost."""
        with transaction(self.engine) as s:
            return s.execute(sa.update(OutboxEntry)
                             .where(OutboxEntry.id == entry.id, OutboxEntry.status == "in_flight",
                                    OutboxEntry.claimed_by == self.instance_id)
                             .values(claimed_until=self.clock() + OUTBOX_LEASE)).rowcount == 1

    def _reschedule(self, entry: OutboxEntry, error: str, retry_after: float | None) -> None:
        backoff = min(300.0, RETRY_BACKOFF_BASE * (2 ** max(0, entry.attempts - 1)))
        wait = max(backoff, retry_after or 0.0)
        with transaction(self.engine) as s:
            s.execute(sa.update(OutboxEntry).where(OutboxEntry.id == entry.id, OutboxEntry.status == "in_flight",
                                                   OutboxEntry.claimed_by == self.instance_id)
                      .values(status="pending", claimed_by=None, claimed_until=None, last_error=error[:500],
                              next_attempt_at=self.clock() + timedelta(seconds=wait)))
            audit.append(s, at=self.clock(), actor=SYSTEM, action="dispatch.retry_scheduled",
                         promotion_id=entry.promotion_id, detail={"attempt": entry.attempts, "error": error[:500],
                                                                  "retry_in_seconds": round(wait, 1)})

    def _finish_entry(self, entry: OutboxEntry, status: str, note: str) -> None:
        with transaction(self.engine) as s:
            s.execute(sa.update(OutboxEntry).where(OutboxEntry.id == entry.id)
                      .values(status=status, last_error=note, completed_at=self.clock(), claimed_until=None))

    async def _fail_dispatch(self, entry: OutboxEntry, p: Promotion, error: str) -> None:
        now = self.clock()
        with transaction(self.engine) as s:
            s.execute(sa.update(OutboxEntry).where(OutboxEntry.id == entry.id)
                      .values(status="failed", last_error=error[:500], completed_at=now))
            if _move(s, p.id, S.APPROVED, S.FAILED, completed_at=now, reason=f"dispatch failed: {error}"):
                _release(s, p)
                audit.append(s, at=now, actor=SYSTEM, action="dispatch.failed", promotion_id=p.id,
                             service=p.service, environment=p.target_environment,
                             detail={"error": error, "attempts": entry.attempts})
        svc = self.config.services[p.service]
        await self._announce(p.id, f"Dispatch failed after {entry.attempts} attempt(s): {error}. Check that "
                                   f"`{svc.workflow}` exists in {svc.repository} at `{svc.ref}`, has a "
                                   "workflow_dispatch trigger with the inputs environment, image_tag, "
                                   "image_digest and promotion_id, and that promobot's token may run it.")

    async def _mark_dispatched(self, entry: OutboxEntry, p: Promotion, request: DispatchRequest, run: RunInfo,
                               *, reconciled: bool) -> None:
        now = self.clock()
        with transaction(self.engine) as s:
            s.execute(sa.update(OutboxEntry).where(OutboxEntry.id == entry.id)
                      .values(status="done", completed_at=now, claimed_until=None))
            moved = _move(s, p.id, S.APPROVED, S.DISPATCHED, dispatched_at=now, pipeline_run_id=run.run_id,
                          run_url=run.url)
            # a run that was sent is on record even if the promotion moved meanwhile
            audit.append(s, at=now, actor=SYSTEM, action="dispatch.sent", promotion_id=p.id, service=p.service,
                         environment=p.target_environment,
                         detail={"repository": request.repository, "workflow": request.workflow,
                                 "ref": request.ref, "inputs": request.inputs, "run_id": run.run_id,
                                 "run_url": run.url, "attempts": entry.attempts, "reconciled": reconciled,
                                 "dry_run": self.dispatcher.dry_run, "promotion_status": None if moved else
                                 s.get(Promotion, p.id).status})
        if not moved:
            current = self._promotion(p.id)
            await self._alert(self.config.services[p.service].channel,
                              f":warning: `{p.id}` was dispatched (run {run.run_id or 'not yet listed'}) although it "
                              f"is now {S(current.status).label.lower()}: watch that deploy and roll back if "
                              "needed.")
            return
        if self.dispatcher.dry_run:
            note = "Dry run: no GitHub credentials, so nothing was dispatched. " + describe(request, dry_run=True)
        elif run.url:
            note = f"Dispatched `{request.workflow}`: <{run.url}|run {run.run_id}>"
        else:
            note = f"Dispatched `{request.workflow}`; the run will be linked once GitHub lists it."
        await self._announce(p.id, note)

    async def run_outbox(self, stop: asyncio.Event, interval: float = 2.0) -> None:
        """Deliver dispatches until ``stop`` is set; wakes early when an approval lands."""
        self.recover_own_claims()
        while not stop.is_set():
            try:
                await self.resume_approvals()
                await self.process_outbox()
                await self.expire_due()
            except Exception:
                log.exception("outbox pass failed")
            self.outbox_wakeup.clear()
            waiter = asyncio.ensure_future(self.outbox_wakeup.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()

    # --- pipeline events -------------------------------------------------------

    def _seen(self, s: Session, event_id: str | None, type_: str, body: dict) -> bool:
        """True when this event_id was processed before; raises Conflict if reused for other content."""
        if not event_id:
            return False
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        seen = s.get(PipelineEvent, event_id)
        if seen is not None:
            if seen.body_sha256 != digest:
                raise Conflict(f"event_id {event_id!r} was already used for a different {seen.type} event")
            return True
        s.add(PipelineEvent(event_id=event_id, type=type_, body_sha256=digest, received_at=self.clock()))
        s.flush()
        return False

    async def artifact_built(self, event: dict, *, actor: str = "pipeline") -> str:
        service, tag, digest = event["service"], event["tag"], event["digest"]
        svc = self.service_config(service)
        now = self.clock()
        mutation: Artifact | None = None
        with transaction(self.engine) as s:
            if self._seen(s, event.get("event_id"), "artifact.built", event):
                return "duplicate"
            existing = s.exec(select(Artifact).where(Artifact.service == service, Artifact.tag == tag)).first()
            if existing is not None and existing.digest != digest:
                mutation = existing
            elif existing is not None:
                return "unchanged"
            else:
                s.add(Artifact(service=service, tag=tag, digest=digest, commit_sha=event.get("commit_sha"),
                               pipeline_run_id=event.get("pipeline_run_id"), built_at=event.get("built_at"),
                               recorded_at=now))
                audit.append(s, at=now, actor=actor, action="artifact.built", service=service,
                             detail={k: event.get(k) for k in ("tag", "digest", "commit_sha", "pipeline_run_id",
                                                               "built_at")})
        if mutation is not None:
            with transaction(self.engine) as s:
                audit.append(s, at=now, actor=actor, action="artifact.tag_mutation", service=service,
                             detail={"tag": tag, "recorded_digest": mutation.digest, "reported_digest": digest})
            text = (f":rotating_light: Tag mutation refused: {service} `{tag}` was recorded with "
                    f"`{mutation.digest}` at {mutation.recorded_at:%Y-%m-%d %H:%M} UTC and is now reported with "
                    f"`{digest}`. A tag must name one build forever: find who re-pushed it, and build a new tag.")
            await self._alert(svc.channel, text)
            raise Conflict(f"tag {tag!r} of {service} is recorded with digest {mutation.digest}; "
                           f"refusing {digest} (tag mutation)")
        return "recorded"

    async def deployment_finished(self, event: dict, *, actor: str = "pipeline") -> str:
        service, tag, environment = event["service"], event["tag"], event["environment"]
        self.service_config(service)
        self.environment_config(environment)
        now = self.clock()
        note, roll_back = None, False
        with transaction(self.engine) as s:
            if self._seen(s, event.get("event_id"), "deployment.finished", event):
                return "duplicate"
            p = self._tracked(s, service, environment, tag, (S.DISPATCHED,))
            # lock the promotion first: a webhook, a poll and the pipeline may report the same run at once
            if p is not None and not _touch(s, p.id, S.DISPATCHED):
                p = None
            if p is None and _run_recorded(s, service, environment, tag, _str(event.get("run_id"))):
                return "duplicate"
            s.add(Deployment(service=service, tag=tag, environment=environment, status=event["status"],
                             run_id=_str(event.get("run_id")), url=event.get("url"),
                             promotion_id=p.id if p else None, finished_at=event.get("finished_at") or now,
                             recorded_at=now))
            audit.append(s, at=now, actor=actor, action="deployment.finished", promotion_id=p.id if p else None,
                         service=service, environment=environment,
                         detail={"tag": tag, "status": event["status"], "run_id": _str(event.get("run_id")),
                                 "url": event.get("url")})
            if p is not None:
                target = after_deployment(event["status"])
                values: dict[str, Any] = {"pipeline_run_id": p.pipeline_run_id or _str(event.get("run_id")),
                                          "run_url": p.run_url or event.get("url")}
                if target is S.FAILED:
                    values.update(completed_at=now, reason="deployment failed")
                if _move(s, p.id, S(p.status), target, **values):
                    if target is S.FAILED:
                        _release(s, p)
                        roll_back = rollback.queue(s, self.config, p, now) or p.kind == "rollback"
                    note = ("Deployed; waiting for verification." if target is S.DEPLOYED
                            else f"Deployment failed: {event.get('url') or 'see the run'}")
        if note and p is not None:
            await self._announce(p.id, note)
        if roll_back:
            await rollback.after_failure(self, p.id)
        return "recorded"

    async def verification_finished(self, event: dict, *, actor: str = "pipeline", follow_up: bool = True) -> str:
        """Record a verification; ``follow_up`` lets a pass start gate 1 (off when importing history)."""
        service, tag, environment = event["service"], event["tag"], event["environment"]
        self.service_config(service)
        self.environment_config(environment)
        now = self.clock()
        note, roll_back = None, False
        with transaction(self.engine) as s:
            if self._seen(s, event.get("event_id"), "verification.finished", event):
                return "duplicate"
            p = self._tracked(s, service, environment, tag, (S.DEPLOYED, S.DISPATCHED))
            if p is not None and not _touch(s, p.id, S(p.status)):
                p = None  # moved by a concurrent report; locking it first also keeps the lock order
            s.add(Verification(service=service, tag=tag, environment=environment, result=event["result"],
                               checks=event.get("checks") or {}, url=event.get("url"),
                               promotion_id=p.id if p else None, finished_at=event.get("finished_at") or now,
                               recorded_at=now))
            audit.append(s, at=now, actor=actor, action="verification.finished", promotion_id=p.id if p else None,
                         service=service, environment=environment,
                         detail={"tag": tag, "result": event["result"], "checks": event.get("checks") or {},
                                 "url": event.get("url")})
            if p is not None:
                target = after_verification(event["result"])
                # the tracker's deadline passes its own reason ("no verification within 1h")
                reason = None if target is S.VERIFIED else (event.get("reason") or "verification failed")
                # a verified rollback keeps why it was asked for
                if _move(s, p.id, S(p.status), target, completed_at=now, reason=reason or p.reason):
                    _release(s, p)
                    held = _hold_replaced(s, p, now) if target is S.VERIFIED else None
                    if target is S.FAILED:
                        roll_back = rollback.queue(s, self.config, p, now) or p.kind == "rollback"
                    failed = ", ".join(k for k, v in (event.get("checks") or {}).items()
                                       if str(v).lower() not in ("passed", "pass", "ok", "success", "true"))
                    note = (f"Verified in {environment}. :white_check_mark:" if target is S.VERIFIED
                            else f"Verification failed in {environment}" + (f" ({failed})" if failed else "")
                            + (f": {event['url']}" if event.get("url") else "."))
                    if held:
                        note += f" {held}"
        if note and p is not None:
            await self._announce(p.id, note)
        if roll_back:
            await rollback.after_failure(self, p.id)
        if event["result"] == "passed" and follow_up:
            await self._promote_automatically(service, tag, environment)
        return "recorded"

    async def scan_finished(self, event: dict, *, actor: str = "pipeline") -> str:
        """Record a vulnerability scan, normalised to findings, for the artifact's digest."""
        from checks.reports import parse_scan
        return self._record_report(event, actor, "scan.finished", ScanReport, scanner=event["scanner"],
                                   findings=parse_scan(event["scanner"], event["report"]))

    async def sbom_published(self, event: dict, *, actor: str = "pipeline") -> str:
        """Record an SBOM, normalised to components and licenses, for the artifact's digest."""
        from checks.reports import parse_sbom
        return self._record_report(event, actor, "sbom.published", SbomReport, format=event["format"],
                                   components=parse_sbom(event["format"], event["sbom"]))

    def _record_report(self, event: dict, actor: str, type_: str, table: type, **values: Any) -> str:
        service, tag = event["service"], event["tag"]
        self.service_config(service)
        artifact = self.ledger.artifact(service, tag)
        digest = event.get("digest") or (artifact.digest if artifact else None)
        if artifact is not None and event.get("digest") and event["digest"] != artifact.digest:
            raise Conflict(f"{type_} for {service} {tag} names digest {event['digest']}, but the artifact was "
                           f"built as {artifact.digest}: this report is about another image")
        now = self.clock()
        with transaction(self.engine) as s:
            if self._seen(s, event.get("event_id"), type_, event):
                return "duplicate"
            row = table(service=service, tag=tag, digest=digest, received_at=now, **values)
            s.add(row)
            summary: dict[str, Any] = {"tag": tag, "digest": digest}
            if "findings" in values:
                counts: dict[str, int] = {}
                for f in values["findings"]:
                    counts[f["severity"]] = counts.get(f["severity"], 0) + 1
                summary.update(scanner=values["scanner"], findings=len(values["findings"]), by_severity=counts)
            else:
                summary.update(format=values["format"], components=len(values["components"]))
            audit.append(s, at=now, actor=actor, action=type_, service=service, detail=summary)
        return "recorded"

    async def _promote_automatically(self, service: str, tag: str, environment: str) -> None:
        """Gate 1: a verified artifact moves on by itself into an environment with approval: automatic."""
        target = self.config.next_environment(environment)
        if target is None or self.config.environment(target).approval != "automatic":
            return
        svc = self.config.services[service]
        try:
            result = await self.request(SYSTEM, service, tag, target)
        except UserError as exc:
            await self._alert(svc.channel, f"Automatic promotion of {service} `{tag}` to {target} not started: "
                                           f"{esc(exc)}")
            return
        if result.outcome == "refused":
            # gate reasons quote lock and hold reasons people typed: escaped, only recorded users mentioned
            reasons = "\n".join(f"• {r.title}: {evidence_text(r.reason, r.evidence)}"
                                 for r in result.report.blocking) or esc(result.message)
            await self._alert(svc.channel, f"Automatic promotion of {service} `{tag}` to {target} refused:\n{reasons}")

    @staticmethod
    def _tracked(s: Session, service: str, environment: str, tag: str, states: tuple[S, ...]) -> Promotion | None:
        active = s.get(ActivePromotion, (service, environment))
        if active is None:
            return None
        p = s.get(Promotion, active.promotion_id)
        if p is None or p.tag != tag or p.status not in {st.value for st in states}:
            return None
        return p

    # --- telling people ----------------------------------------------------------

    async def _announce(self, promotion_id: str, note: str | None) -> None:
        view = self.view(promotion_id)
        if view is None:
            return
        try:
            await self.notifier.promotion_changed(view, note)
        except Exception:
            log.exception("could not update the card for %s", promotion_id)

    async def _alert(self, channel: str, text: str) -> None:
        try:
            await self.notifier.alert(channel, text)
        except Exception:
            log.exception("could not post an alert to %s", channel)

    async def _tell(self, user: str, text: str) -> None:
        try:
            await self.notifier.tell(user, text)
        except Exception:
            log.exception("could not message %s", user)


# --- transaction helpers --------------------------------------------------------


def _move(s: Session, promotion_id: str, current: S, target: S, **values: Any) -> bool:
    """Move a promotion only if it is still in ``current``: the row's own compare-and-set."""
    result = s.execute(sa.update(Promotion)
                       .where(Promotion.id == promotion_id, Promotion.status == current.value)
                       .values(status=target.value, version=Promotion.version + 1, **values))
    return result.rowcount == 1


def _touch(s: Session, promotion_id: str, current: S) -> bool:
    """Lock the row while it is in ``current`` (serialises concurrent approvers)."""
    result = s.execute(sa.update(Promotion).where(Promotion.id == promotion_id, Promotion.status == current.value)
                       .values(version=Promotion.version + 1))
    return result.rowcount == 1


def _approval_count(s: Session, promotion_id: str) -> int:
    return s.exec(select(sa.func.count()).select_from(Approval)
                  .where(Approval.promotion_id == promotion_id, Approval.decision == "approve")).one()


def _run_recorded(s: Session, service: str, environment: str, tag: str, run_id: str | None) -> bool:
    """Whether this run's outcome is already recorded for its promotion (reported twice)."""
    if run_id is None:
        return False
    return s.exec(select(Deployment.id).where(Deployment.service == service, Deployment.environment == environment,
                                              Deployment.tag == tag, Deployment.run_id == run_id,
                                              col(Deployment.promotion_id).is_not(None))).first() is not None


def _release(s: Session, p: Promotion) -> None:
    s.execute(sa.delete(ActivePromotion).where(ActivePromotion.promotion_id == p.id))


def _hold_replaced(s: Session, p: Promotion, now: datetime) -> str | None:
    """A verified rollback puts the artifact it replaced on hold; returns the note for the card's thread."""
    if p.kind != "rollback" or not p.replaces_tag or p.replaces_tag == p.tag:
        return None  # after a failed deploy the environment may "replace" the very artifact it restores
    reason = f"rolled back in {p.target_environment} by {p.id}" + (f": {p.reason}" if p.reason else "")
    if not put_on_hold(s, service=p.service, tag=p.replaces_tag, reason=reason, held_by=p.requested_by, now=now,
                       actor=SYSTEM, promotion_id=p.id):
        return None
    return (f"`{esc(p.replaces_tag)}` is now on hold: no environment takes it until "
            f"`/promote hold clear {esc(p.service)} {esc(p.replaces_tag)} reason…`.")


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _report_from_json(data: dict | None) -> GateReport | None:
    if not data:
        return None
    from checks.base import GateResult
    return GateReport(service=data["service"], tag=data["tag"], target_environment=data["target_environment"],
                      source_environment=data.get("source_environment"), digest=data.get("digest"),
                      evaluated_at=datetime.fromisoformat(data["evaluated_at"]),
                      results=tuple(GateResult.from_json(g) for g in data.get("gates", [])))


def promotion_record(s: Session, p: Promotion) -> dict[str, Any]:
    """The promotion model's record: what the audit export and GET /api/v1/promotions/{id} return."""
    approvers = list(s.exec(select(Approval.approver).where(Approval.promotion_id == p.id,
                                                            Approval.decision == "approve")
                            .order_by(col(Approval.decided_at))))
    verifications = s.exec(select(Verification).where(Verification.promotion_id == p.id)
                           .order_by(col(Verification.finished_at))).all()
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
        "verification_results": [{"result": v.result, "checks": v.checks or {}, "url": v.url,
                                  "finished_at": _iso(v.finished_at)} for v in verifications],
        "status": p.status,
        "reason": p.reason,
    }


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None
