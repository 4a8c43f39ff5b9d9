"""Authorization from the deploy side: may this workflow run deploy this artifact into this environment?

The deploy workflow asks before it deploys (``POST /api/v1/deployments/authorize``), and GitHub asks on its
own through promobot's custom deployment protection rule. Both get the same decision:

1. the promotion exists and is for exactly this service, environment and digest (a promotion id reused
   with another environment or artifact is refused);
2. promobot approved and dispatched it (``dispatched``, or ``approved`` with its dispatch already sent);
3. GitHub says the run is promobot's own dispatch: a run of the service's configured workflow, event
   ``workflow_dispatch``, started by promobot's GitHub identity, and the run recorded at dispatch (or, only
   while none is recorded, a run whose name carries the promotion id);
4. a promotion authorizes one run, once: the first allowed (run, attempt) is recorded, unique per
   promotion. The same run and attempt asking again (a retried step, or the step after the protection rule)
   gets the same answer; another run, or a re-run attempt of the same run, is refused.

Every decision is recorded and audited. A denial names its reason, alerts the service channel and the
environment's approvers (once per run, attempt and reason), and the workflow step fails before the deploy.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.engine import messages
from bot.engine.context import EngineContext
from bot.engine.notifications import Notifications
from bot.engine.roles import DispatchError, RunInfo
from bot.engine.run_identity import PROMOTION_ID, not_the_dispatched_run
from bot.offload import off_loop
from storage import audit
from storage.db import transaction
from storage.models import AuthorizedRun, DeployDecision, OutboxEntry, Promotion
from storage.statuses import PromotionStatus as S

log = logging.getLogger(__name__)

AUTHORIZE = "authorize"  # the deploy workflow's own step
PROTECTION_RULE = "protection_rule"  # GitHub, holding the job before it starts


@dataclass(frozen=True)
class DeployRequest:
    """A run asking to deploy. ``promotion_id``, ``service`` and ``digest`` are what the workflow claims
    (the authorize step); a protection-rule delivery claims only the repository, run and environment."""

    source: str
    repository: str
    run_id: str
    environment: str
    service: str | None = None
    promotion_id: str | None = None
    digest: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class DeployVerdict:
    allowed: bool
    reason: str  # "authorized", or the rule that refused: unknown_promotion, promotion_mismatch, wrong_actor, …
    message: str  # plain text: the rule, the evidence and the next step
    request: DeployRequest
    promotion: Promotion | None = None
    run: RunInfo | None = None
    repeated: bool = False  # this run and attempt were authorized before: the same answer again

    @property
    def run_attempt(self) -> int | None:
        return self.run.run_attempt if self.run else None


class GitHubUnavailable(Exception):
    """GitHub could not say whether the run is promobot's: no decision now (the caller retries)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class DeployGuard:
    """Decides, records and tells; one per process (``PromotionService.deploy_guard``)."""

    def __init__(self, ctx: EngineContext, notifications: Notifications):
        self.ctx = ctx
        self.notifications = notifications

    async def decide(self, request: DeployRequest) -> DeployVerdict:
        """The decision for ``request``, recorded and audited (alerts on a denial); raises GitHubUnavailable
        when GitHub could not be asked about the run."""
        verdict = await self._evaluate(request)
        if verdict.allowed:
            verdict = await asyncio.to_thread(self._authorize_once, verdict)
        await self._record(verdict)
        return verdict

    # --- the decision ---------------------------------------------------------------------------

    def _deny(
        self, request: DeployRequest, reason: str, evidence: str, p: Promotion | None = None, run: RunInfo | None = None
    ) -> DeployVerdict:
        return DeployVerdict(False, reason, messages.deploy_denied_text(reason, evidence, p), request, p, run)

    async def _evaluate(self, request: DeployRequest) -> DeployVerdict:
        run: RunInfo | None = None
        if self.ctx.dispatcher.dry_run:
            evidence = "promobot runs without GitHub credentials (dry run), so it can check no run"
            return self._deny(
                request, "unverifiable", evidence, await off_loop(self.ctx.promotion, request.promotion_id or "")
            )
        if request.source == PROTECTION_RULE:
            if self.service_of(request.repository) is None:
                return self._deny(request, "unknown_service", f"promobot.yml names no service in {request.repository}")
            if request.environment not in self.ctx.config.environment_names:
                evidence = f"promobot.yml names no environment {request.environment!r}"
                return self._deny(request, "unknown_environment", evidence)
            run = await self._run(request)
            if run is None:
                return self._deny(
                    request, "run_not_found", f"GitHub has no run {request.run_id} in {request.repository}"
                )
            p = await off_loop(self._promotion_of_run, request.repository, run)
            if p is None:
                return self._deny(
                    request,
                    "unknown_promotion",
                    f"run {run.run_id} is not the run of any promotion promobot dispatched",
                )
        else:
            p = await off_loop(self.ctx.promotion, request.promotion_id or "")
            if p is None:
                return self._deny(request, "unknown_promotion", f"there is no promotion {request.promotion_id!r}")
        if p.service not in self.ctx.config.services:
            return self._deny(request, "unknown_service", f"promobot.yml no longer names {p.service}", p, run)
        mismatch = self._mismatch(request, p)
        if mismatch is not None:
            return self._deny(request, "promotion_mismatch", mismatch, p, run)
        if not await off_loop(self._dispatch_sent, p):
            return self._deny(request, "not_dispatched", messages.not_dispatched_evidence(p), p, run)
        if run is None:
            run = await self._run(request)
            if run is None:
                return self._deny(
                    request, "run_not_found", f"GitHub has no run {request.run_id} in {request.repository}", p
                )
        try:
            login = await self.ctx.dispatcher.own_login()
        except DispatchError as exc:
            raise GitHubUnavailable(f"could not ask GitHub who promobot is: {exc}", exc.retry_after) from None
        svc = self.ctx.config.services[p.service]
        problem = not_the_dispatched_run(
            run, workflow=svc.workflow, promotion_id=p.id, recorded_run_id=p.pipeline_run_id, own_login=login
        )
        if problem is not None:
            return self._deny(request, problem[0], problem[1], p, run)
        return DeployVerdict(True, "authorized", messages.deploy_authorized_text(p, run), request, p, run)

    async def _run(self, request: DeployRequest) -> RunInfo | None:
        """The run as GitHub describes it; None when GitHub has no such run."""
        try:
            return await self.ctx.dispatcher.get_run(request.repository, request.run_id)
        except DispatchError as exc:
            if exc.status == 404:
                return None
            raise GitHubUnavailable(
                f"could not read run {request.run_id} from GitHub: {exc}", exc.retry_after
            ) from None

    def service_of(self, repository: str) -> str | None:
        """The configured service whose deploys run in ``repository`` (the first, if several share it)."""
        return next(
            (n for n, svc in self.ctx.config.services.items() if svc.repository.lower() == repository.lower()), None
        )

    def _promotion_of_run(self, repository: str, run: RunInfo) -> Promotion | None:
        """For a protection rule, which names no promotion: the one that recorded this run, else the one the
        run's name carries (the run checks then say why a run it did not record is not its run)."""
        services = {n for n, svc in self.ctx.config.services.items() if svc.repository.lower() == repository.lower()}
        with Session(self.ctx.db) as s:
            p = s.exec(
                select(Promotion).where(
                    col(Promotion.pipeline_run_id) == run.run_id, col(Promotion.service).in_(services)
                )
            ).first()
            if p is not None:
                return p
            for candidate in PROMOTION_ID.findall(run.title or ""):
                found = s.get(Promotion, candidate)
                if found is not None and found.service in services:
                    return found
        return None

    def _mismatch(self, request: DeployRequest, p: Promotion) -> str | None:
        """What the run claims that the promotion is not (its id reused elsewhere), or None."""
        svc = self.ctx.config.services.get(p.service)
        claims = [
            ("repository", svc.repository if svc else None, request.repository),
            ("service", p.service, request.service),
            ("environment", p.target_environment, request.environment),
            ("digest", p.digest, request.digest),
            ("tag", p.tag, request.tag),
        ]
        wrong = [
            f"{name} {claimed} (the promotion's is {actual})"
            for name, actual, claimed in claims
            if claimed is not None and (actual or "").lower() != claimed.lower()
        ]
        if not wrong:
            return None
        return (
            f"{p.id} is for {p.service} `{p.tag}` ({p.digest}) to {p.target_environment}; this run names "
            + ", ".join(wrong)
        )

    def _dispatch_sent(self, p: Promotion) -> bool:
        """Dispatched, or approved with its dispatch already on its way (GitHub may start the run before
        promobot has recorded its answer)."""
        if p.status == S.DISPATCHED.value:
            return True
        if p.status != S.APPROVED.value:
            return False
        with Session(self.ctx.db) as s:
            attempts = s.exec(select(col(OutboxEntry.attempts)).where(col(OutboxEntry.promotion_id) == p.id)).first()
        return bool(attempts)

    def _authorize_once(self, verdict: DeployVerdict) -> DeployVerdict:
        """One run per promotion: record this (run, attempt) unless another one came first."""
        p, run, request = verdict.promotion, verdict.run, verdict.request
        assert p is not None and run is not None and run.run_id is not None
        attempt = run.run_attempt or 1
        for _ in range(2):  # a concurrent twin may insert first: read it back and compare
            with Session(self.ctx.db) as s:
                first = s.get(AuthorizedRun, p.id)
            if first is not None:
                if first.run_id != run.run_id:
                    evidence = (
                        f"{p.id} already authorized run {first.run_id} at {first.authorized_at:%Y-%m-%d %H:%M} UTC; "
                        f"a promotion authorizes one run, and run {run.run_id} is another"
                    )
                    return self._deny(request, "another_run", evidence, p, run)
                if first.run_attempt != attempt:
                    evidence = (
                        f"{p.id} authorized attempt {first.run_attempt} of run {run.run_id}; attempt {attempt} is a "
                        f"re-run (started by {run.triggering_actor or 'someone'})"
                    )
                    return self._deny(request, "rerun_attempt", evidence, p, run)
                return replace(verdict, repeated=True)
            try:
                with transaction(self.ctx.db) as s:
                    s.add(
                        AuthorizedRun(
                            promotion_id=p.id,
                            repository=request.repository,
                            run_id=run.run_id,
                            run_attempt=attempt,
                            environment=p.target_environment,
                            digest=p.digest,
                            source=request.source,
                            authorized_at=self.ctx.clock(),
                        )
                    )
                return verdict
            except IntegrityError:
                continue
        raise RuntimeError(f"could not record the authorized run of {p.id}")  # unreachable: the row exists

    # --- recording and telling ----------------------------------------------------------------------

    async def _record(self, verdict: DeployVerdict) -> None:
        request, p, run = verdict.request, verdict.promotion, verdict.run
        now = self.ctx.clock()
        service = p.service if p else (request.service or self.service_of(request.repository))
        if service not in self.ctx.config.services:
            service = None
        seen_before = await asyncio.to_thread(self._recorded_before, verdict, service, now)
        if seen_before:
            return  # told once already: a retried step or the protection rule and the step for the same run
        if verdict.allowed and p is not None:
            await self.notifications.announce(p.id, messages.deploy_authorized_note(verdict.run, request.source))
        elif not verdict.allowed and service is not None:
            text = messages.deploy_denied_alert(
                service, request.environment, request.run_id, run, verdict.reason, verdict.message, request.source
            )
            channel = self.ctx.config.services[service].channel
            if request.environment in self.ctx.config.environment_names:
                await self.notifications.alert_approvers(request.environment, channel, text)
            else:
                await self.notifications.alert(channel, text)
        elif not verdict.allowed:
            log.warning("deploy of run %s in %s refused: %s", request.run_id, request.repository, verdict.message)

    def _recorded_before(self, verdict: DeployVerdict, service: str | None, now: datetime) -> bool:
        """Record the decision (audited); whether the same one was recorded for this run before."""
        request, p, run = verdict.request, verdict.promotion, verdict.run
        with transaction(self.ctx.db) as s:
            seen_before = (
                s.exec(
                    select(col(DeployDecision.id)).where(
                        col(DeployDecision.repository) == request.repository,
                        col(DeployDecision.run_id) == request.run_id,
                        col(DeployDecision.run_attempt).is_(None)
                        if verdict.run_attempt is None
                        else col(DeployDecision.run_attempt) == verdict.run_attempt,
                        col(DeployDecision.reason) == verdict.reason,
                    )
                ).first()
                is not None
            )
            s.add(
                DeployDecision(
                    source=request.source,
                    repository=request.repository,
                    run_id=request.run_id,
                    run_attempt=verdict.run_attempt,
                    run_actor=run.actor if run else None,
                    service=service,
                    environment=request.environment,
                    digest=request.digest or (p.digest if p else None),
                    promotion_id=p.id if p else request.promotion_id,
                    allowed=verdict.allowed,
                    reason=verdict.reason,
                    message=verdict.message,
                    decided_at=now,
                )
            )
            audit.append(
                s,
                at=now,
                actor=f"github-run:{request.run_id}",
                action="deployment.authorized" if verdict.allowed else "deployment.authorization_denied",
                promotion_id=p.id if p else None,
                service=service,
                environment=request.environment,
                detail={
                    "source": request.source,
                    "repository": request.repository,
                    "run_id": request.run_id,
                    "run_attempt": verdict.run_attempt,
                    "run_actor": run.actor if run else None,
                    "triggering_actor": run.triggering_actor if run else None,
                    "claimed_promotion_id": request.promotion_id,
                    "claimed_digest": request.digest,
                    "reason": verdict.reason,
                    "repeated": verdict.repeated,
                },
            )
        return seen_before
