"""The engine's front: the one object handlers, the shell and the server talk to.

It builds the lifecycle stages and hands each call to the stage that owns it:

- ``requests``: what a command means, the gates, opening a promotion (and gate 1);
- ``approvals``: approving (N of M), rejecting, cancelling, revoking, expiry;
- ``outbox``: the dispatch, exactly once, and its worker loop;
- ``events``: builds, deployments, verifications, scans and SBOMs from the pipeline;
- ``tracker``: following dispatched runs (webhooks, polling, verification deadlines);
- ``deploy_guard`` and ``protection_rules``: may this run deploy? (the authorize route, GitHub's protection rule);
- ``rollbacks``: automatic rollback requests; ``safeguards``: locks and holds;
- ``notifications`` and ``messages``: telling people; ``status`` and ``records``: reading back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from bot.clock import utcnow
from bot.config import EnvironmentConfig, PromobotConfig, ServiceConfig
from bot.engine import messages, records
from bot.engine.approvals import Approvals, Later
from bot.engine.context import EngineContext
from bot.engine.delivery import LISTING_LAG, RETRY_BACKOFF_BASE
from bot.engine.deploy_guard import DeployGuard, DeployRequest, DeployVerdict
from bot.engine.events import PipelineEvents
from bot.engine.holds import Safeguards
from bot.engine.notifications import Notifications
from bot.engine.outbox import Outbox
from bot.engine.outcomes import DecisionResult, RequestResult
from bot.engine.protection_rule import ProtectionRules
from bot.engine.requests import Requests
from bot.engine.roles import ApproverDirectory, Dispatcher, Notifier, PromotionView, Records
from bot.engine.rollback import Rollbacks
from bot.engine.status import Status
from bot.engine.tracking import Tracker
from bot.offload import urgent
from checks.base import GateReport, Registry, SourceHost
from storage.claims import first_delivery
from storage.models import Promotion
from storage.statuses import Decision, PromotionKind


class PromotionService:
    def __init__(
        self,
        *,
        config: PromobotConfig,
        engine: Engine,
        ledger: Records,
        dispatcher: Dispatcher,
        notifier: Notifier,
        directory: ApproverDirectory,
        registry: Registry | None = None,
        source_host: SourceHost | None = None,
        clock: Callable[[], datetime] = utcnow,
        instance_id: str = "promobot",
        tracking_interval: float = 30.0,
        retry_backoff_base: float = RETRY_BACKOFF_BASE,
        run_listing_lag: timedelta = LISTING_LAG,
    ):
        self.clock = clock  # the engine's clock, injected (tests set it)
        self.ctx = EngineContext(
            config=config,
            db=engine,
            ledger=ledger,
            dispatcher=dispatcher,
            notifier=notifier,
            directory=directory,
            clock=clock,
            instance_id=instance_id,
            registry=registry,
            source_host=source_host,
        )
        self.notifications = Notifications(self.ctx)
        self.requests = Requests(self.ctx, self.notifications)
        self.approvals = Approvals(self.ctx, self.notifications, self.requests)
        self.outbox = Outbox(
            self.ctx,
            self.notifications,
            self.requests,
            self.approvals,
            backoff_base=retry_backoff_base,
            listing_lag=run_listing_lag,
        )
        self.rollbacks = Rollbacks(self.ctx, self.notifications, self.requests)
        self.events = PipelineEvents(self.ctx, self.notifications, self.requests, self.rollbacks)
        self.deploy_guard = DeployGuard(self.ctx, self.notifications)
        self.protection_rules = ProtectionRules(self.ctx, self.deploy_guard, self.notifications)
        self.tracker = Tracker(
            self.ctx,
            self.notifications,
            self.events,
            self.rollbacks,
            interval=tracking_interval,
            protection_rules=self.protection_rules,
        )
        self.safeguards = Safeguards(self.ctx, self.notifications)
        self.status = Status(self.ctx, self.notifications)

    # --- what the engine works with ------------------------------------------------------------

    @property
    def config(self) -> PromobotConfig:
        return self.ctx.config

    @property
    def ledger(self) -> Records:
        return self.ctx.ledger

    @property
    def dispatcher(self) -> Dispatcher:
        return self.ctx.dispatcher

    def service_config(self, service: str) -> ServiceConfig:
        """The service's configuration; raises UserError naming the closest known services."""
        return self.ctx.service_config(service)

    def environment_config(self, environment: str) -> EnvironmentConfig:
        return self.ctx.environment_config(environment)

    # --- reading -----------------------------------------------------------------------------

    async def check(
        self,
        service: str,
        tag: str | None = None,
        environment: str | None = None,
        *,
        kind: str = PromotionKind.PROMOTION.value,
        expedite_reason: str | None = None,
    ) -> GateReport:
        """Evaluate every gate for the promotion (expedited with a reason); changes nothing."""
        return await self.requests.check(service, tag, environment, kind=kind, expedite_reason=expedite_reason)

    def view(self, promotion_id: str) -> PromotionView | None:
        return records.view(self.ctx, promotion_id)

    def record(self, promotion_id: str) -> dict[str, Any] | None:
        """The promotion record in the promotion model's JSON shape."""
        return records.record(self.ctx, promotion_id)

    # --- requesting and deciding --------------------------------------------------------------

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
        return await self.requests.request(
            requester, service, tag, environment, kind=kind, reason=reason, expedite_reason=expedite_reason
        )

    async def approve(self, promotion_id: str, user: str) -> DecisionResult:
        return await self.approvals.approve(promotion_id, user)

    async def record_approval(self, promotion_id: str, user: str, *, later: Later = None) -> DecisionResult:
        return await self.approvals.record_approval(promotion_id, user, later=later)

    async def complete_approval(
        self, promotion_id: str, actor: str, recorded: DecisionResult | None = None
    ) -> DecisionResult:
        return await self.approvals.complete_approval(promotion_id, actor, recorded)

    async def reject(self, promotion_id: str, user: str, reason: str, *, later: Later = None) -> DecisionResult:
        return await self.approvals.reject(promotion_id, user, reason, later=later)

    async def cancel(self, promotion_id: str, user: str, *, later: Later = None) -> DecisionResult:
        return await self.approvals.cancel(promotion_id, user, later=later)

    async def revoke_approval(self, promotion_id: str, user: str, *, later: Later = None) -> DecisionResult:
        """Withdraw an approval; returns once committed, its announcement handed to ``later`` (or awaited)."""
        return await self.approvals.revoke(promotion_id, user, later=later)

    async def rejectable(self, promotion_id: str, user: str) -> Promotion | str:
        """The promotion, if ``user`` may reject it now; why not, if they may not. One urgent read: the reason
        modal must open while its trigger id lives (three seconds), and what it shows never changes."""
        p = await urgent(self.ctx.promotion, promotion_id)
        if p is None:
            return messages.no_such_promotion(promotion_id)
        return await self.approvals.refusal(p, user, Decision.REJECT.value) or p

    async def first_slack_event(self, event_id: str, body: bytes) -> bool:
        """Claim a Slack Events API delivery once across replicas (Slack redelivers when an ack is slow)."""
        return await asyncio.to_thread(
            first_delivery, self.ctx.db, key=f"slack:{event_id}", kind="slack.event", body=body, now=self.ctx.clock()
        )

    async def expire_due(self) -> int:
        return await self.approvals.expire_due()

    # --- the deploy side ------------------------------------------------------------------------

    async def authorize_deploy(self, request: DeployRequest) -> DeployVerdict:
        """May this run deploy? Recorded, audited, alerted when refused; raises GitHubUnavailable."""
        return await self.deploy_guard.decide(request)

    # --- the background work -------------------------------------------------------------------

    async def process_outbox(self) -> int:
        return await self.outbox.process()

    async def run_outbox(self, stop: asyncio.Event, interval: float = 2.0) -> None:
        await self.outbox.run(stop, interval)
