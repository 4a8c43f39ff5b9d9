"""promobot as a GitHub custom deployment protection rule: GitHub holds every job that targets a protected
environment and asks (``deployment_protection_rule``, action ``requested``); promobot makes the deploy
guard's decision and answers through the run's review endpoint.

A request is recorded before it is decided, and the answer is kept until GitHub took it: when GitHub could
not be asked about the run, or did not take the answer, the tracking pass decides again or resends it
(GitHub waits up to 30 days). The answer goes to ``POST /repos/{repo}/actions/runs/{id}/deployment_protection_rule``
built from promobot's own API base, never to a URL taken from the payload: the payload's
``deployment_callback_url`` only names the run.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.engine import messages
from bot.engine.context import EngineContext
from bot.engine.deploy_guard import PROTECTION_RULE, DeployGuard, DeployRequest, GitHubUnavailable
from bot.engine.notifications import Notifications
from bot.engine.roles import DispatchError
from bot.offload import off_loop
from storage import audit
from storage.db import transaction
from storage.models import ProtectionRuleReview

log = logging.getLogger(__name__)

CALLBACK_PATH = re.compile(
    r"/repos/(?P<repository>[^/]+/[^/]+)/actions/runs/(?P<run_id>\d+)/deployment_protection_rule/?$"
)
REVIEW_WINDOW = timedelta(days=30)  # how long GitHub holds a job for a protection rule's answer
ORPHANED_AFTER = timedelta(minutes=1)  # a request never tried: its delivery's process died before answering
MAX_REVIEWS_PER_PASS = 20


def callback_run(url: Any, repository: str) -> str | None:
    """The run id a ``deployment_callback_url`` names, if it is the review endpoint of a run of ``repository``
    (``https://api.github.com/repos/o/r/actions/runs/123/deployment_protection_rule``, or under ``/api/v3``)."""
    if not isinstance(url, str):
        return None
    parsed = urlparse(url)
    m = CALLBACK_PATH.search(parsed.path)
    if parsed.scheme not in ("https", "http") or m is None or m["repository"].lower() != repository.lower():
        return None
    return m["run_id"]


class ProtectionRules:
    def __init__(self, ctx: EngineContext, guard: DeployGuard, notifications: Notifications):
        self.ctx = ctx
        self.guard = guard
        self.notifications = notifications

    async def requested(self, payload: dict[str, Any], delivery_id: str | None = None) -> tuple[str, bool]:
        """Handle a delivery: (approved | rejected | pending | ignored, whether GitHub took the answer)."""
        if payload.get("action") != "requested":
            return "ignored", False
        repository = (payload.get("repository") or {}).get("full_name") or ""
        environment = payload.get("environment")
        run_id = callback_run(payload.get("deployment_callback_url"), repository)
        if run_id is None or not isinstance(environment, str) or not environment:
            log.warning(
                "deployment_protection_rule delivery %s names no run of %s to answer (callback %r); ignored",
                delivery_id,
                repository,
                payload.get("deployment_callback_url"),
            )
            return "ignored", False
        review_id = await asyncio.to_thread(self._requested, repository, run_id, environment, delivery_id)
        return await self.settle(review_id)

    def _requested(self, repository: str, run_id: str, environment: str, delivery_id: str | None) -> int:
        with transaction(self.ctx.db) as s:
            review = ProtectionRuleReview(
                repository=repository,
                run_id=run_id,
                environment=environment,
                delivery_id=delivery_id,
                requested_at=self.ctx.clock(),
            )
            s.add(review)
            s.flush()
            review_id = review.id
        assert review_id is not None
        return review_id

    async def settle(self, review_id: int) -> tuple[str, bool]:
        """Decide the review (once) and send the answer; (state or pending, whether GitHub took it)."""
        review = await off_loop(self._review, review_id)
        assert review is not None
        if review.answered_at is not None:
            return review.state or "pending", True
        state, comment = review.state, review.comment
        if state is None:
            try:
                verdict = await self.guard.decide(
                    DeployRequest(PROTECTION_RULE, review.repository, review.run_id, review.environment)
                )
            except GitHubUnavailable as exc:
                await asyncio.to_thread(self._failed, review_id, f"not decided: {exc}")
                return "pending", False
            state = "approved" if verdict.allowed else "rejected"
            comment = messages.protection_rule_comment(state, verdict.message)
            await asyncio.to_thread(self._decided, review_id, state, comment)
        assert comment is not None
        try:
            await self.ctx.dispatcher.review_protection_rule(
                review.repository, review.run_id, review.environment, state, comment
            )
        except DispatchError as exc:
            attempts = await asyncio.to_thread(self._failed, review_id, str(exc))
            if attempts == 1:
                await self._alert_unanswered(review, state, exc)
            return state, False
        await asyncio.to_thread(self._answered, review, state, comment)
        return state, True

    def _review(self, review_id: int) -> ProtectionRuleReview | None:
        with Session(self.ctx.db) as s:
            return s.get(ProtectionRuleReview, review_id)

    def _decided(self, review_id: int, state: str, comment: str) -> None:
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(ProtectionRuleReview)
                .where(col(ProtectionRuleReview.id) == review_id)
                .values(state=state, comment=comment)
            )

    def _answered(self, review: ProtectionRuleReview, state: str, comment: str) -> None:
        now = self.ctx.clock()
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(ProtectionRuleReview)
                .where(col(ProtectionRuleReview.id) == review.id)
                .values(answered_at=now, attempts=col(ProtectionRuleReview.attempts) + 1, last_error=None)
            )
            audit.append(
                s,
                at=now,
                actor="promobot",
                action="protection_rule.answered",
                service=self.guard.service_of(review.repository),
                environment=review.environment,
                detail={"repository": review.repository, "run_id": review.run_id, "state": state, "comment": comment},
            )

    def _failed(self, review_id: int, error: str) -> int:
        with transaction(self.ctx.db) as s:
            s.execute(
                sa.update(ProtectionRuleReview)
                .where(col(ProtectionRuleReview.id) == review_id)
                .values(attempts=col(ProtectionRuleReview.attempts) + 1, last_error=error[:500])
            )
            return s.exec(
                select(col(ProtectionRuleReview.attempts)).where(col(ProtectionRuleReview.id) == review_id)
            ).one()

    async def _alert_unanswered(self, review: ProtectionRuleReview, state: str, exc: DispatchError) -> None:
        service = self.guard.service_of(review.repository)
        text = messages.protection_rule_unanswered(review.repository, review.run_id, review.environment, state, exc)
        if service is not None:
            await self.notifications.alert(self.ctx.config.services[service].channel, text)
        else:
            log.warning("%s", text)

    async def resend_open(self) -> int:
        """Decide again or resend what GitHub has not taken yet (requests of the last 30 days); returns how
        many GitHub took now."""
        answered = 0
        for review_id in await off_loop(self._open_reviews, self.ctx.clock()):
            assert review_id is not None
            answered += (await self.settle(review_id))[1]
        return answered

    def _open_reviews(self, now: datetime) -> list[int | None]:
        with Session(self.ctx.db) as s:
            return list(
                s.exec(
                    select(col(ProtectionRuleReview.id))
                    .where(
                        col(ProtectionRuleReview.answered_at).is_(None),
                        col(ProtectionRuleReview.requested_at) >= now - REVIEW_WINDOW,
                        # not one its delivery is answering right now: tried and failed, or never tried for a while
                        sa.or_(
                            col(ProtectionRuleReview.attempts) > 0,
                            col(ProtectionRuleReview.requested_at) <= now - ORPHANED_AFTER,
                        ),
                    )
                    .order_by(col(ProtectionRuleReview.requested_at))
                    .limit(MAX_REVIEWS_PER_PASS)
                )
            )
