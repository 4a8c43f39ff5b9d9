"""Resolving and requesting: what ``/promote`` and ``/rollback`` mean, the gates, and opening a promotion.

A request runs every gate. When they all pass it opens the promotion in one
transaction with its audit event (superseding a pending request for the same
environment), then posts the card. Where the target needs no person, the
dispatch is queued in that same transaction (gate 1).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from bot.engine import expedite, incident, messages, records
from bot.engine.context import SYSTEM, EngineContext
from bot.engine.errors import UserError
from bot.engine.notifications import Notifications
from bot.engine.outcomes import RequestResult
from bot.engine.transitions import move
from bot.offload import off_loop
from checks import runner
from checks.base import Expedite, GateContext, GateReport
from checks.catalog import gates_for
from storage import audit
from storage.db import transaction
from storage.models import ActivePromotion, OutboxEntry, Promotion
from storage.statuses import DeploymentStatus, OutboxStatus, PromotionKind, VerificationResult
from storage.statuses import PromotionStatus as S

log = logging.getLogger(__name__)

CARD_GRACE = timedelta(seconds=30)  # an automatic promotion's dispatch waits this long at most for its card


def expedited_detail(exp: Expedite | None) -> dict:
    """What the audit trail records about an expedited request."""
    return {"expedited": exp is not None, **({"expedite": exp.to_json()} if exp else {})}


class Requests:
    def __init__(self, ctx: EngineContext, notifications: Notifications):
        self.ctx = ctx
        self.notifications = notifications
        self._waiting_listeners: list[Callable[[Promotion], None]] = []

    def when_waiting(self, listener: Callable[[Promotion], None]) -> None:
        """Call ``listener`` (on the event loop) with each promotion this opens waiting for approval, once it
        is committed."""
        self._waiting_listeners.append(listener)

    # --- what the command means ---------------------------------------------------------

    def resolve(self, service: str, tag: str | None, environment: str | None) -> tuple[str, str | None, str]:
        """Fill in what /promote leaves out: (tag, source environment, target environment)."""
        ctx, ledger = self.ctx, self.ctx.ledger
        ctx.service_config(service)
        names = ctx.config.environment_names
        if environment is not None:
            ctx.environment_config(environment)
            source = ctx.config.previous_environment(environment)
            if tag is None:
                if source is None:
                    raise UserError(messages.first_environment_needs_tag(service, environment))
                tag = ledger.latest_verified_tag(service, source)
                if tag is None:
                    raise UserError(messages.nothing_verified(service, source, environment))
            return tag, source, environment
        if tag is not None:
            # the next environment after the last one where the tag is verified
            verified = ledger.latest_verified_tags(service, names)
            verified_in = [e for e in names if verified[e] == tag]
            if not verified_in:
                if ctx.config.policy.is_mutable(tag):
                    raise UserError(messages.mutable_tag(service, tag))  # the rule, not "nothing recorded"
                if ledger.artifact(service, tag) is None:
                    raise UserError(messages.no_such_artifact(service, tag))
                return tag, None, names[0]
            last = verified_in[-1]
            target = ctx.config.next_environment(last)
            if target is None:
                raise UserError(f"`{tag}` is already verified in {last}, the last environment.")
            return tag, last, target
        verified = ledger.latest_verified_tags(service, names)
        for target in reversed(names[1:]):
            source = ctx.config.previous_environment(target)
            candidate = verified[source] if source else None
            if candidate and candidate != ledger.current_artifact(service, target):
                return candidate, source, target
        raise UserError(messages.nothing_waiting(service))

    def resolve_rollback(self, service: str, tag: str | None, environment: str | None) -> tuple[str, str]:
        """(tag, environment) for /rollback: by default the last known-good artifact of the last environment."""
        ctx, ledger = self.ctx, self.ctx.ledger
        ctx.service_config(service)
        environment = environment or ctx.config.environment_names[-1]
        ctx.environment_config(environment)
        current = ledger.current_artifact(service, environment)
        latest = ledger.deployments(service, environment, limit=1)
        if latest and latest[0].status != DeploymentStatus.SUCCESS:
            current = None  # a failed deploy leaves the environment in doubt: the last good one may come back
        passed = [
            v for v in ledger.verifications(service, environment, limit=200) if v.result == VerificationResult.PASSED
        ]
        if tag is None:
            # an artifact on hold was rolled back once already: it is not "known good"
            known_good = next((v.tag for v in passed if v.tag != current and ledger.hold(service, v.tag) is None), None)
            if known_good is None:
                raise UserError(messages.no_known_good(service, environment, current))
            return known_good, environment
        if tag == current:
            raise UserError(f"{service} already runs `{tag}` in {environment}.")
        if not any(v.tag == tag for v in passed):
            raise UserError(messages.never_verified_there(tag, environment))
        return tag, environment

    # --- the gates ------------------------------------------------------------------------

    async def evaluate(
        self, service: str, tag: str, source: str | None, target: str, kind: str, exp: Expedite | None = None
    ) -> GateReport:
        """Every gate for ``target``, at once (those switched off or skipped say so); changes nothing."""
        ctx = self.ctx
        gate_ctx = GateContext(
            service=service,
            tag=tag,
            target_environment=target,
            source_environment=source,
            now=ctx.clock(),
            config=ctx.config,
            ledger=ctx.ledger,
            registry=ctx.registry,
            source_host=ctx.source_host,
            kind=kind,
            expedite=exp,
        )
        return await runner.evaluate(gates_for(ctx.config, target, kind=kind, expedite=exp), gate_ctx)

    async def evaluate_promotion(self, p: Promotion) -> GateReport:
        """The gates of a recorded promotion, again (an expedited one skips what it skipped at request)."""
        return await self.evaluate(
            p.service, p.tag, p.source_environment, p.target_environment, p.kind, expedite.of(self.ctx, p)
        )

    async def check(
        self,
        service: str,
        tag: str | None = None,
        environment: str | None = None,
        *,
        kind: str = PromotionKind.PROMOTION.value,
        expedite_reason: str | None = None,
    ) -> GateReport:
        """Evaluate every gate for the promotion (expedited when a reason is given); changes nothing."""
        # resolving reads the ledger: off the event loop, like the gates
        if expedite_reason is not None:
            chosen, source, target, exp = await off_loop(
                expedite.plan, self.ctx, service, tag, environment, expedite_reason
            )
            return await self.evaluate(service, chosen, source, target, kind, exp)
        chosen, source, target = await off_loop(self.resolve, service, tag, environment)
        return await self.evaluate(service, chosen, source, target, kind)

    # --- opening a promotion -----------------------------------------------------------

    def active(self, service: str, environment: str) -> Promotion | None:
        """The promotion holding the (service, environment) slot, if any."""
        with Session(self.ctx.db) as s:
            slot = s.get(ActivePromotion, (service, environment))
            return s.get(Promotion, slot.promotion_id) if slot else None

    async def request(
        self,
        requester: str,
        service: str,
        tag: str | None = None,
        environment: str | None = None,
        *,
        kind: str = PromotionKind.PROMOTION.value,
        reason: str | None = None,
        expedite_reason: str | None = None,
    ) -> RequestResult:
        """Check the gates and, when they all pass, open a promotion (or refuse with every reason).
        With ``expedite_reason``, an expedited promotion (``bot.engine.expedite``). What reads or writes the
        database runs off the event loop: it acks Slack meanwhile."""
        ctx = self.ctx
        planned = await off_loop(self._plan, service, tag, environment, kind, expedite_reason)
        if isinstance(planned, RequestResult):
            return planned
        tag, source, target, exp, preempts = planned
        report = await self.evaluate(service, tag, source, target, kind, exp)
        now = ctx.clock()
        if not report.eligible:
            await asyncio.to_thread(self._refused, requester, report, kind, reason, exp, now)
            return RequestResult("refused", report, None, "")
        env = ctx.config.environment(target)
        manual = env.approval == "manual" or exp is not None  # an expedited promotion always needs people
        promotion, superseded = await asyncio.to_thread(
            self._open, requester, report, kind, reason, exp, preempts, manual=manual, now=now
        )
        if manual:
            for listener in self._waiting_listeners:
                listener(promotion)
        if superseded:
            await self.notifications.announce(superseded, messages.superseded_by(promotion.id, requester))
        await self._post_card(promotion.id, ctx.approvers_for(target, expedited=exp is not None) if manual else [])
        if not manual:
            await asyncio.to_thread(self._release_dispatch, promotion.id)
            ctx.outbox_wakeup.set()
            return RequestResult(
                "approved",
                report,
                promotion.id,
                f"`{tag}` is going to {target} (approval: {env.approval}); promotion `{promotion.id}`.",
            )
        return RequestResult("requested", report, promotion.id, messages.requested(promotion))

    def _plan(
        self, service: str, tag: str | None, environment: str | None, kind: str, expedite_reason: str | None
    ) -> RequestResult | tuple[str, str | None, str, Expedite | None, str | None]:
        """(tag, source, target, expedite, what it preempts) of the request, or why it is refused before any
        gate is asked: a deploy or a rollback under way."""
        ctx = self.ctx
        ctx.service_config(service)
        exp: Expedite | None = None
        if expedite_reason is not None:
            if kind == PromotionKind.ROLLBACK:
                raise UserError(
                    "A rollback is never expedited: `/rollback` already skips soak and the previous environment."
                )
            tag, source, target, exp = expedite.plan(ctx, service, tag, environment, expedite_reason)
        elif kind == PromotionKind.ROLLBACK:
            # a deploy under way is said first: before it is deployed there is nothing to roll back yet
            busy = self.active(service, environment or ctx.config.environment_names[-1])
            if busy is not None and S(busy.status) in (S.APPROVED, S.DISPATCHED):
                report = GateReport(service, tag or "", busy.target_environment, None, None, ctx.clock(), ())
                return RequestResult("refused", report, busy.id, messages.in_progress(busy, kind))
            tag, target = self.resolve_rollback(service, tag, environment)
            source = None
        else:
            tag, source, target = self.resolve(service, tag, environment)
        in_flight = self.active(service, target)
        preempts: str | None = None
        if in_flight is not None and in_flight.status != S.PENDING_APPROVAL.value:
            preempts = incident.preemptable(in_flight, kind)
            if preempts is None:
                report = GateReport(service, tag, target, source, None, ctx.clock(), ())
                return RequestResult("refused", report, in_flight.id, messages.in_progress(in_flight, kind))
        elif in_flight is not None and in_flight.preempts:
            # a pending rollback that will end a deploy's wait: only another rollback may take its place
            if kind != PromotionKind.ROLLBACK:
                report = GateReport(service, tag, target, source, None, ctx.clock(), ())
                return RequestResult("refused", report, in_flight.id, messages.rollback_waiting(in_flight))
            preempts = in_flight.preempts
        return tag, source, target, exp, preempts

    def _refused(
        self, requester: str, report: GateReport, kind: str, reason: str | None, exp: Expedite | None, now: datetime
    ) -> None:
        with transaction(self.ctx.db) as s:
            audit.append(
                s,
                at=now,
                actor=requester,
                action=f"{kind}.refused",
                service=report.service,
                environment=report.target_environment,
                detail={"tag": report.tag, "report": report.to_json(), "reason": reason, **expedited_detail(exp)},
            )

    def _open(
        self,
        requester: str,
        report: GateReport,
        kind: str,
        reason: str | None,
        exp: Expedite | None,
        preempts: str | None,
        *,
        manual: bool,
        now: datetime,
    ) -> tuple[Promotion, str | None]:
        """The promotion opened, with the slot it takes; and the one it superseded, if any."""
        ctx = self.ctx
        service, tag, target, source = report.service, report.tag, report.target_environment, report.source_environment
        svc, env = ctx.service_config(service), ctx.config.environment(target)
        artifact = ctx.ledger.artifact(service, tag)
        assert artifact is not None  # every gate passed, the metadata gate among them
        policy = ctx.config.policy.expedite
        required = policy.required_approvals if exp is not None and policy else env.required_approvals
        ttl = (policy.approval_ttl if exp is not None and policy else None) or env.approval_ttl
        promotion = Promotion(
            id=f"prm-{secrets.token_hex(5)}",
            kind=kind,
            service=service,
            tag=tag,
            digest=artifact.digest,
            source_commit=artifact.commit_sha,
            source_environment=source,
            target_environment=target,
            status=(S.PENDING_APPROVAL if manual else S.APPROVED).value,
            requested_by=requester,
            requested_at=now,
            approved_at=None if manual else now,
            expires_at=now + ttl if manual else None,
            required_approvals=required if manual else 0,
            reason=reason,
            expedited=exp is not None,
            expedite_reason=exp.reason if exp else None,
            preempts=preempts,
            channel=svc.channel,
            gate_report=report.to_json(),
            replaces_tag=ctx.ledger.current_artifact(service, target),
        )
        superseded: str | None = None
        try:
            with transaction(ctx.db) as s:
                slot = s.get(ActivePromotion, (service, target))
                if slot is not None and preempts is not None and slot.promotion_id == preempts:
                    # the deploy awaiting its verification hands the slot to the rollback; it is still
                    # followed (``incident``), and the rollback's approval ends its wait
                    incident.note_rollback_requested(s, preempts, promotion.id, requester, now)
                    s.delete(slot)
                    s.flush()
                elif slot is not None:
                    earlier = s.get(Promotion, slot.promotion_id)
                    if earlier is None or not move(
                        s,
                        earlier,
                        S.PENDING_APPROVAL,
                        S.SUPERSEDED,
                        at=now,
                        actor=requester,
                        action=f"{kind}.superseded",
                        detail={"by": promotion.id},
                        reason=f"superseded by {promotion.id}",
                        decided_by=requester,
                    ):
                        raise UserError(messages.already_in_progress(slot.promotion_id, target))
                    superseded = slot.promotion_id
                    s.delete(slot)
                    s.flush()
                s.add(promotion)
                s.add(ActivePromotion(service=service, environment=target, promotion_id=promotion.id))
                s.flush()
                audit.append(
                    s,
                    at=now,
                    actor=requester,
                    action=f"{kind}.requested",
                    promotion_id=promotion.id,
                    service=service,
                    environment=target,
                    detail={
                        "tag": tag,
                        "digest": artifact.digest,
                        "source_environment": source,
                        "reason": reason,
                        "preempts": preempts,
                        **expedited_detail(exp),
                        "report": report.to_json(),
                    },
                )
                if not manual:
                    audit.append(
                        s,
                        at=now,
                        actor=SYSTEM,
                        action=f"{kind}.approved",
                        promotion_id=promotion.id,
                        service=service,
                        environment=target,
                        detail={"approval": env.approval, "approvers": []},
                    )
                    # held until the card is posted (so the dispatch notice threads under it), at most the grace
                    s.add(OutboxEntry(promotion_id=promotion.id, created_at=now, next_attempt_at=now + CARD_GRACE))
        except IntegrityError:
            raise UserError(messages.opened_at_the_same_moment(service, target)) from None
        return promotion, superseded

    def _release_dispatch(self, promotion_id: str) -> None:
        """The outbox entry of a promotion approved on request may go now: its card is posted."""
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(OutboxEntry)
                .where(
                    col(OutboxEntry.promotion_id) == promotion_id,
                    col(OutboxEntry.status) == OutboxStatus.PENDING.value,
                )
                .values(next_attempt_at=self.ctx.clock())
            )

    async def _post_card(self, promotion_id: str, approvers: list[str]) -> None:
        """Post the card and tell the approvers; remember where the card is."""
        view = await off_loop(records.view, self.ctx, promotion_id)
        assert view is not None
        approver_users = sorted(await self.notifications.approver_users(approvers)) if approvers else []
        try:
            channel, ts = await self.ctx.notifier.promotion_requested(view, approver_users)
        except Exception:
            log.exception("could not post the card for %s", promotion_id)
            channel, ts = None, None
        if ts:
            await asyncio.to_thread(self._card_posted, promotion_id, channel, ts)

    def _card_posted(self, promotion_id: str, channel: str | None, ts: str) -> None:
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(Promotion).where(col(Promotion.id) == promotion_id).values(channel=channel, message_ts=ts)
            )

    async def promote_automatically(self, service: str, tag: str, environment: str) -> None:
        """Gate 1: a verified artifact moves on by itself into an environment with approval: automatic."""
        ctx = self.ctx
        target = ctx.config.next_environment(environment)
        if target is None or ctx.config.environment(target).approval != "automatic":
            return
        svc = ctx.config.services[service]
        try:
            result = await self.request(SYSTEM, service, tag, target)
        except UserError as exc:
            await self.notifications.alert(svc.channel, messages.automatic_not_started(service, tag, target, exc))
            return
        if result.outcome == "refused":
            await self.notifications.alert(
                svc.channel, messages.automatic_refused(service, tag, target, result.report, result.message)
            )
