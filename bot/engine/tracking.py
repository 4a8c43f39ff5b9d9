"""Following each dispatched run to its end: GitHub webhooks, polling where none arrive, and the
verification deadline.

Every outcome goes through the engine's own ``deployment_finished`` and
``verification_finished`` with an ``event_id`` derived from the run (or the
deadline), so a webhook, a poll and the pipeline's own report of the same run
move a promotion once, on any number of replicas. The periodic pass runs on
every replica; a ``JobClaim`` per time slot lets exactly one of them do it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.clock import format_duration
from bot.engine import messages
from bot.engine.context import SYSTEM, EngineContext
from bot.engine.delivery import dispatch_request
from bot.engine.errors import Conflict
from bot.engine.events import PipelineEvents
from bot.engine.notifications import Notifications
from bot.engine.protection_rule import ProtectionRules
from bot.engine.roles import DispatchError, RunInfo
from bot.engine.rollback import Rollbacks
from bot.engine.run_identity import PROMOTION_ID, not_the_dispatched_run
from bot.offload import off_loop
from storage.claims import first_delivery, forget_delivery
from storage.db import rowcount, transaction
from storage.models import Deployment, JobClaim, Promotion
from storage.statuses import DeploymentStatus
from storage.statuses import PromotionStatus as S

log = logging.getLogger(__name__)

JOB = "tracking"
CLAIM_RETENTION = timedelta(hours=1)
MAX_POLLS_PER_PASS = 50


def webhook_run(payload: dict[str, Any]) -> RunInfo:
    """The ``workflow_run`` of a webhook delivery as the engine reads a run."""
    run = payload.get("workflow_run") or {}
    workflow = payload.get("workflow") or {}

    def login(key: str) -> str | None:
        return (run.get(key) or {}).get("login")

    status = "completed" if payload.get("action") == "completed" else run.get("status")
    workflow_id = run.get("workflow_id", workflow.get("id"))
    return RunInfo(
        str(run["id"]) if run.get("id") is not None else None,
        run.get("html_url"),
        status,
        run.get("conclusion"),
        run.get("display_title") or run.get("name"),
        workflow_path=run.get("path") or workflow.get("path"),
        workflow_id=str(workflow_id) if workflow_id is not None else None,
        event=run.get("event"),
        actor=login("actor"),
        triggering_actor=login("triggering_actor"),
        run_attempt=run.get("run_attempt"),
        head_branch=run.get("head_branch"),
    )


def deployment_status(conclusion: str | None) -> str:
    """A run's conclusion as a deployment outcome: only ``success`` deployed anything."""
    return (DeploymentStatus.SUCCESS if conclusion == "success" else DeploymentStatus.FAILURE).value


class Tracker:
    """Follows dispatched runs for the engine: one per process, safe to run on every replica."""

    def __init__(
        self,
        ctx: EngineContext,
        notifications: Notifications,
        events: PipelineEvents,
        rollbacks: Rollbacks,
        *,
        interval: float = 30.0,
        protection_rules: ProtectionRules | None = None,
    ):
        self.ctx = ctx
        self.notifications = notifications
        self.events = events
        self.rollbacks = rollbacks
        self.interval = interval
        self.protection_rules = protection_rules

    # --- matching runs to promotions ---------------------------------------------

    async def match(self, repository: str, run: RunInfo) -> Promotion | None:
        """The promotion ``run`` belongs to, or None: it must be a workflow_dispatch run of the service's
        configured workflow, and either the run recorded at dispatch or, only while none is recorded, a run
        promobot's own identity started with the promotion id in its name. Anything else is logged and
        ignored (never "failed"): a CI run quoting a promotion id in its title is not its deploy."""
        p = await off_loop(self._claimed_by, run)
        svc = self.ctx.config.services.get(p.service) if p else None
        # a run of another repository never moves a promotion, whatever its name says
        if p is None or svc is None or svc.repository.lower() != repository.lower():
            return None
        try:
            login = await self.ctx.dispatcher.own_login()
        except DispatchError as exc:
            log.info("run %s not matched to %s: promobot's GitHub identity is unknown (%s)", run.run_id, p.id, exc)
            return None  # the polling pass follows it once GitHub answers
        problem = not_the_dispatched_run(
            run, workflow=svc.workflow, promotion_id=p.id, recorded_run_id=p.pipeline_run_id, own_login=login
        )
        if problem is not None:
            log.info("run %s ignored for %s: %s (%s)", run.run_id, p.id, *problem)
            return None
        return p

    def _claimed_by(self, run: RunInfo) -> Promotion | None:
        """The promotion whose recorded run is ``run``; or, only while none is recorded, the one its title
        names."""
        with Session(self.ctx.db) as s:
            if run.run_id:
                p = s.exec(select(Promotion).where(col(Promotion.pipeline_run_id) == str(run.run_id))).first()
                if p is not None:
                    return p
            for candidate in PROMOTION_ID.findall(run.title or ""):
                found = s.get(Promotion, candidate)
                if found is not None and found.pipeline_run_id is None:
                    return found
        return None

    # --- recording ---------------------------------------------------------------

    async def record_run(self, p: Promotion, run: RunInfo, *, actor: str) -> str:
        """Link the run to its promotion; when it completed, record the deployment's outcome once.
        Returns recorded | linked | duplicate | ignored."""
        if p.status != S.DISPATCHED.value:
            return "ignored"  # not dispatched yet, or its outcome is already known
        if run.status != "completed":
            return "linked" if await self.link(p, run) else "ignored"
        event = {
            "type": "deployment.finished",
            "event_id": f"github-run:{run.run_id}",
            "service": p.service,
            "tag": p.tag,
            "environment": p.target_environment,
            "status": deployment_status(run.conclusion),
            "run_id": run.run_id,
            "url": run.url,
            "promotion_id": p.id,
        }
        try:
            return await self.events.deployment_finished(event, actor=actor)
        except IntegrityError:
            return "duplicate"  # another replica recorded the same run at the same moment
        except Conflict:
            return "duplicate"  # a re-run of the same run id: the first outcome stands

    async def link(self, p: Promotion, run: RunInfo) -> bool:
        """Remember the run of a dispatch whose answer carried no run id (GHES); says so once."""
        if not run.run_id or p.pipeline_run_id:
            return False
        linked = await asyncio.to_thread(self._link, p.id, run.run_id, run.url)
        if linked:
            await self.notifications.announce(p.id, messages.run_linked(run.run_id, run.url))
        return linked

    def _link(self, promotion_id: str, run_id: str, url: str | None) -> bool:
        with transaction(self.ctx.db) as s:
            changed = s.execute(
                sa.update(Promotion)
                .where(col(Promotion.id) == promotion_id, col(Promotion.pipeline_run_id).is_(None))
                .values(pipeline_run_id=run_id, run_url=url)
            )
            return rowcount(changed) == 1

    # --- webhooks -----------------------------------------------------------------

    def claim_delivery(self, delivery_id: str, event: str, body: bytes) -> bool:
        """First sight of this X-GitHub-Delivery on any replica; False for a redelivery or a twin."""
        return first_delivery(
            self.ctx.db, key=f"github:{delivery_id}", kind=f"github.{event}", body=body, now=self.ctx.clock()
        )

    def release_delivery(self, delivery_id: str) -> None:
        """Forget a delivery that could not be handled, so that GitHub's redelivery is."""
        forget_delivery(self.ctx.db, key=f"github:{delivery_id}")

    async def workflow_run(self, payload: dict[str, Any]) -> str:
        """Handle a ``workflow_run`` webhook; returns recorded | linked | duplicate | ignored."""
        repository = (payload.get("repository") or {}).get("full_name") or ""
        info = webhook_run(payload)
        p = await self.match(repository, info)
        if p is None:
            return "ignored"
        return await self.record_run(p, info, actor="github-webhook")

    async def protection_rule(self, payload: dict[str, Any], delivery_id: str | None = None) -> tuple[str, bool]:
        """Handle a ``deployment_protection_rule`` webhook: (approved | rejected | pending | ignored, answered)."""
        if self.protection_rules is None:
            return "ignored", False
        return await self.protection_rules.requested(payload, delivery_id)

    # --- the periodic pass -------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run a pass every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                if await asyncio.to_thread(self.claim_slot):
                    await self.run_pass()
            except Exception:
                log.exception("tracking pass failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            except TimeoutError:
                pass

    def claim_slot(self) -> bool:
        """One pass per time slot across replicas: the first INSERT of the slot's key wins."""
        slot, now = int(time.time() // self.interval), datetime.now(UTC)
        try:
            with transaction(self.ctx.db) as s:
                s.execute(
                    sa.delete(JobClaim).where(
                        col(JobClaim.job) == JOB, col(JobClaim.claimed_at) < now - CLAIM_RETENTION
                    )
                )
                s.add(JobClaim(job=JOB, run_key=str(slot), claimed_by=self.ctx.instance_id, claimed_at=now))
            return True
        except IntegrityError:
            return False

    async def run_pass(self) -> None:
        await self.poll_dispatched()
        await self.enforce_deadlines()
        await self.rollbacks.process_pending()
        if self.protection_rules is not None:
            await self.protection_rules.resend_open()

    async def poll_dispatched(self) -> int:
        """Ask GitHub about runs dispatched longer than one interval ago without an outcome; returns
        how many outcomes were recorded."""
        if self.ctx.dispatcher.dry_run:
            return 0
        waiting = await off_loop(self._dispatched_before, self.ctx.clock() - timedelta(seconds=self.interval))
        recorded = 0
        for p in waiting:
            svc = self.ctx.config.services.get(p.service)
            if svc is None:
                continue
            run: RunInfo | None
            try:
                if p.pipeline_run_id:
                    run = await self.ctx.dispatcher.get_run(svc.repository, p.pipeline_run_id)
                else:
                    run = await self.ctx.dispatcher.find_run(
                        dispatch_request(self.ctx, p), since=p.dispatched_at or p.requested_at
                    )
            except DispatchError as exc:
                log.info("could not ask GitHub about the run of %s: %s", p.id, exc)
                if exc.retry_after:
                    break  # rate limited: the next pass comes back later
                continue
            if run is not None and await self.record_run(p, run, actor="github-poll") == "recorded":
                recorded += 1
        return recorded

    def _dispatched_before(self, cutoff: datetime) -> list[Promotion]:
        with Session(self.ctx.db) as s:
            return list(
                s.exec(
                    select(Promotion)
                    .where(col(Promotion.status) == S.DISPATCHED.value, col(Promotion.dispatched_at) <= cutoff)
                    .order_by(col(Promotion.dispatched_at))
                    .limit(MAX_POLLS_PER_PASS)
                ).all()
            )

    async def enforce_deadlines(self) -> int:
        """Fail promotions deployed without a verification within their environment's
        ``verification_deadline`` (reported as a failed verification); returns how many were reported."""
        now = self.ctx.clock()
        rows = await off_loop(self._deployed)
        failed = 0
        for p, deployed_at in rows:
            if p.target_environment not in self.ctx.config.environment_names:
                continue
            deadline = self.ctx.config.environment(p.target_environment).verification_deadline
            if now < (deployed_at or p.dispatched_at or p.requested_at) + deadline:
                continue
            missed = f"no verification within {format_duration(deadline)}"
            event = {
                "type": "verification.finished",
                "event_id": f"deadline:{p.id}",
                "service": p.service,
                "tag": p.tag,
                "environment": p.target_environment,
                "result": "failed",
                "checks": {missed: "missed"},
                "url": None,
                "reason": missed,
            }
            try:
                failed += await self.events.verification_finished(event, actor=SYSTEM, follow_up=False) == "recorded"
            except (IntegrityError, Conflict):
                pass  # another replica enforced the same deadline
        return failed

    def _deployed(self) -> list[tuple[Promotion, datetime | None]]:
        """Promotions deployed and waiting for their verification, with when their deployment was recorded."""
        with Session(self.ctx.db) as s:
            return [
                (p, at)
                for p, at in s.exec(
                    select(Promotion, sa.func.max(col(Deployment.recorded_at)))
                    .join(Deployment, col(Deployment.promotion_id) == col(Promotion.id), isouter=True)
                    .where(col(Promotion.status) == S.DEPLOYED.value)
                    .group_by(col(Promotion.id))
                ).all()
            ]
