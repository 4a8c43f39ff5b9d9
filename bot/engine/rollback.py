"""Automatic rollback requests: a failed production deployment or verification asks at once for the
last known-good artifact, through the same gates and approval as ``/rollback``.

The transition that fails the promotion also queues the request in its own
transaction (a ``JobClaim`` row keyed by the failed promotion), so the request
survives a crash right after the commit. ``process`` opens it exactly once,
whichever replica gets there first; the tracking pass picks up what a dead
replica left queued.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.config import PromobotConfig
from bot.engine import messages
from bot.engine.context import SYSTEM, EngineContext
from bot.engine.errors import UserError
from bot.engine.notifications import Notifications
from bot.engine.requests import Requests
from bot.offload import off_loop
from storage import audit
from storage.db import rowcount, transaction
from storage.models import JobClaim, Promotion
from storage.statuses import PromotionKind

JOB = "auto-rollback"
QUEUED, DONE = "queued", "done"
ORPHANED_AFTER = timedelta(minutes=1)  # a request still queued this long: its replica died before taking it
LEASE = timedelta(minutes=5)  # a claim older than this, not done, belonged to a replica that died


def is_production(config: PromobotConfig, environment: str) -> bool:
    """The environment a failure must be rolled back in: manual approval, or the last one."""
    if environment not in config.environment_names:
        return False
    return config.environment(environment).approval == "manual" or environment == config.environment_names[-1]


def queue(s: Session, config: PromobotConfig, p: Promotion, now: datetime) -> bool:
    """Inside the failing transition's transaction: remember that a rollback must be requested."""
    if p.kind == PromotionKind.ROLLBACK.value or not is_production(config, p.target_environment):
        return False
    s.add(JobClaim(job=JOB, run_key=p.id, claimed_by=QUEUED, claimed_at=now))
    return True


class Rollbacks:
    def __init__(
        self,
        ctx: EngineContext,
        notifications: Notifications,
        requests: Requests,
        *,
        orphaned_after: timedelta = ORPHANED_AFTER,
    ):
        self.ctx = ctx
        self.notifications = notifications
        self.requests = requests
        self.orphaned_after = orphaned_after  # how long a queued request waits for the replica that queued it

    async def after_failure(self, promotion_id: str) -> None:
        """Called by the replica whose transition failed the promotion: open the queued rollback request,
        or, when a rollback itself failed, tell the approvers that production needs a person."""
        p = await off_loop(self.ctx.promotion, promotion_id)
        if p is None or not is_production(self.ctx.config, p.target_environment):
            return
        if p.kind != PromotionKind.ROLLBACK.value:
            await self.process(promotion_id)
            return
        channel = self.ctx.config.services[p.service].channel
        await self.notifications.alert_approvers(p.target_environment, channel, messages.rollback_failed(p))

    async def process_pending(self) -> int:
        """Open every queued rollback request that no live replica is handling; returns how many."""
        opened = 0
        for promotion_id in await off_loop(self._queued, self.ctx.clock()):
            opened += bool(await self.process(promotion_id))
        return opened

    def _queued(self, now: datetime) -> list[str]:
        with Session(self.ctx.db) as s:
            return list(
                s.exec(
                    select(col(JobClaim.run_key)).where(
                        col(JobClaim.job) == JOB,
                        col(JobClaim.claimed_by) != DONE,
                        sa.or_(
                            sa.and_(
                                col(JobClaim.claimed_by) == QUEUED, col(JobClaim.claimed_at) < now - self.orphaned_after
                            ),
                            col(JobClaim.claimed_at) < now - LEASE,
                        ),
                    )
                )
            )

    def _claim(self, promotion_id: str) -> bool:
        now = self.ctx.clock()
        with transaction(self.ctx.db) as s:
            result = s.execute(
                sa.update(JobClaim)
                .where(
                    col(JobClaim.job) == JOB,
                    col(JobClaim.run_key) == promotion_id,
                    col(JobClaim.claimed_by) != DONE,
                    sa.or_(col(JobClaim.claimed_by) == QUEUED, col(JobClaim.claimed_at) < now - LEASE),
                )
                .values(claimed_by=self.ctx.instance_id, claimed_at=now)
            )
            return rowcount(result) == 1

    async def process(self, promotion_id: str) -> str | None:
        """Open the queued rollback request for the failed ``promotion_id`` unless another replica has it.
        Returns the rollback's promotion id when one was opened."""
        if not await asyncio.to_thread(self._claim, promotion_id):
            return None
        p = await off_loop(self.ctx.promotion, promotion_id)
        assert p is not None
        earlier = await off_loop(self._earlier_request, promotion_id)  # opened before a crash, not yet marked done
        rollback_id, detail = (earlier, {"rollback_id": earlier}) if earlier else await self._request(p)
        await asyncio.to_thread(self._done, p, detail)
        return rollback_id

    def _done(self, p: Promotion, detail: dict) -> None:
        promotion_id = p.id
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(JobClaim)
                .where(col(JobClaim.job) == JOB, col(JobClaim.run_key) == promotion_id)
                .values(claimed_by=DONE)
            )
            audit.append(
                s,
                at=self.ctx.clock(),
                actor=SYSTEM,
                action="rollback.automatic",
                promotion_id=p.id,
                service=p.service,
                environment=p.target_environment,
                detail={"failed": p.reason, **detail},
            )

    def _earlier_request(self, promotion_id: str) -> str | None:
        with Session(self.ctx.db) as s:
            return s.exec(
                select(col(Promotion.id)).where(
                    col(Promotion.kind) == PromotionKind.ROLLBACK.value,
                    col(Promotion.requested_by) == SYSTEM,
                    col(Promotion.reason).contains(promotion_id),
                )
            ).first()

    async def _request(self, p: Promotion) -> tuple[str | None, dict]:
        channel = self.ctx.config.services[p.service].channel
        env = p.target_environment
        headline = messages.failure_headline(p)
        what = f"{p.reason or 'failed'} for {p.service} `{p.tag}` in {env} (`{p.id}`)"
        waiting = await off_loop(self.requests.active, p.service, env)
        if waiting is not None and waiting.kind == PromotionKind.ROLLBACK.value and waiting.preempts == p.id:
            # a person already asked for a rollback while this deploy awaited verification: no second one
            await self.notifications.announce(p.id, messages.rollback_already_requested(waiting))
            return waiting.id, {"rollback_id": waiting.id, "tag": waiting.tag, "already_requested": True}
        try:
            result = await self.requests.request(
                SYSTEM, p.service, None, env, kind=PromotionKind.ROLLBACK.value, reason=f"automatic: {what}"
            )
        except UserError as exc:
            await self.notifications.alert_approvers(env, channel, messages.rollback_not_requested(headline, exc))
            return None, {"refused": str(exc)}
        tag = result.report.tag
        if result.outcome == "refused":
            await self.notifications.alert_approvers(
                env, channel, messages.rollback_refused(headline, p, tag, result.report, result.message)
            )
            return None, {"tag": tag, "refused": result.message or messages.blocking_reasons(result.report)}
        await self.notifications.announce(p.id, f"Rollback to `{tag}` requested: `{result.promotion_id}`.")
        await self.notifications.alert(
            channel,
            messages.rollback_requested(headline, tag, result.promotion_id, self.ctx.config.environment(env).approvers),
        )
        return result.promotion_id, {"rollback_id": result.promotion_id, "tag": tag}
