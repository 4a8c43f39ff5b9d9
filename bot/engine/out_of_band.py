"""Deployments and verifications no promobot promotion dispatched: seen, and never trusted.

Builds land in the first environment directly: its reports are the normal entry point and count as
evidence. In every later environment a report counts only when it is linked to the promotion promobot
dispatched there (the promotion holding the environment, for the same artifact, and the same run when the
report names one; a verification may also verify the deployment such a promotion made). Anything else is
out-of-band: recorded in its own table (never the evidence tables), audited, alerted to the service channel
and the environment's approvers, and flagged on /status and App Home until promobot next deploys there.
Environments named in ``policy.out_of_band_environments`` take such reports (202 ``out_of_band``); the
others refuse them with a 409 naming the rule, and they are audited, alerted and flagged all the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.engine import messages
from bot.engine.context import EngineContext
from bot.engine.errors import Conflict
from bot.engine.notifications import Notifications
from storage import audit
from storage.db import transaction
from storage.models import ActivePromotion, AuthorizedRun, Deployment, OutOfBandReport, Promotion
from storage.statuses import DeploymentStatus
from storage.statuses import PromotionStatus as S

OUT_OF_BAND = "out-of-band report"
PROMOTION_MISMATCH = "promotion mismatch"


class NotLinked(Exception):
    """Raised inside a report's transaction to undo it: the report is out-of-band (the message says why)."""


def run_conflict(s: Session, p: Promotion, event: dict[str, Any]) -> str | None:
    """Why a report is not about ``p``'s run even though ``p`` holds the environment, or None."""
    if event.get("promotion_id") and event["promotion_id"] != p.id:
        return f"it names {event['promotion_id']}, but promobot's promotion into {p.target_environment} is {p.id}"
    run_id = event.get("run_id")
    if run_id is None:
        return None
    authorized = s.get(AuthorizedRun, p.id)
    known = p.pipeline_run_id or (authorized.run_id if authorized else None)
    if known is not None and str(run_id) != known:
        return f"it comes from run {run_id}, but promobot dispatched run {known} for {p.id}"
    return None


def why_not_linked(s: Session, service: str, environment: str, tag: str) -> str:
    """The evidence for an out-of-band report: what promobot has going on in that environment."""
    slot = s.get(ActivePromotion, (service, environment))
    active = s.get(Promotion, slot.promotion_id) if slot else None
    if active is None:
        return f"no promobot promotion of {service} into {environment} is in progress"
    if active.tag != tag:
        return f"promobot's promotion into {environment} ({active.id}) is for `{active.tag}`, not `{tag}`"
    return f"promobot's promotion {active.id} of `{tag}` is {S(active.status).label.lower()}, not deploying"


def verified_deployment(s: Session, service: str, environment: str, tag: str) -> str | None:
    """The promotion whose deployment of ``tag`` runs in the environment now: a verification of it is in-band."""
    latest = s.exec(
        select(Deployment)
        .where(
            col(Deployment.service) == service,
            col(Deployment.environment) == environment,
            col(Deployment.status) == DeploymentStatus.SUCCESS.value,
        )
        .order_by(col(Deployment.finished_at).desc(), col(Deployment.id).desc())
        .limit(1)
    ).first()
    if latest is None or latest.tag != tag or latest.promotion_id is None:
        return None
    return latest.promotion_id


class OutOfBand:
    def __init__(self, ctx: EngineContext, notifications: Notifications):
        self.ctx = ctx
        self.notifications = notifications

    def is_entry_point(self, environment: str) -> bool:
        """The first environment: builds land there directly, so its reports are evidence."""
        return environment == self.ctx.config.environment_names[0]

    def accepts(self, environment: str) -> bool:
        return environment in self.ctx.config.policy.out_of_band_environments

    async def check_claims(self, kind: str, event: dict[str, Any], *, actor: str) -> None:
        """A report naming a promotion must match it: a promotion id reused with another service, environment
        or artifact is refused (409, audited, alerted), in every environment."""
        if not event.get("promotion_id"):
            return
        problem = await asyncio.to_thread(self._mismatch, kind, event, actor)
        if problem is None:
            return
        service, environment, tag = event["service"], event["environment"], event["tag"]
        text = messages.promotion_mismatch_alert(kind, service, environment, tag, actor, problem)
        await self.notifications.alert_approvers(environment, self.ctx.service_config(service).channel, text)
        raise Conflict(messages.promotion_mismatch_refusal(kind, problem), rule=PROMOTION_MISMATCH)

    def _mismatch(self, kind: str, event: dict[str, Any], actor: str) -> str | None:
        """How the report does not match the promotion it names (audited), or None when it does."""
        pid = event["promotion_id"]
        service, environment, tag = event["service"], event["environment"], event["tag"]
        p = self.ctx.promotion(pid)
        artifact = self.ctx.ledger.artifact(service, tag)
        digest = event.get("digest") or (artifact.digest if artifact else None)
        if p is None:
            problem = f"there is no promotion {pid!r}"
        elif (p.service, p.target_environment, p.tag) != (service, environment, tag) or (digest and digest != p.digest):
            problem = (
                f"{p.id} is for {p.service} `{p.tag}` ({p.digest}) to {p.target_environment}, not {service} "
                f"`{tag}`{f' ({digest})' if digest else ''} to {environment}"
            )
        else:
            return None
        now = self.ctx.clock()
        with transaction(self.ctx.db) as s:
            audit.append(
                s,
                at=now,
                actor=actor,
                action=f"{kind}.promotion_mismatch",
                promotion_id=p.id if p else None,
                service=service,
                environment=environment,
                detail={"tag": tag, "claimed_promotion_id": pid, "digest": digest, "problem": problem},
            )
        return problem

    async def report(self, kind: str, event: dict[str, Any], *, actor: str, reason: str) -> str:
        """Record a report no promobot promotion explains: ``out_of_band`` where the environment takes such
        reports, else a Conflict naming the rule. Audited, alerted and flagged either way; the same event_id
        sent again gets the same answer without a second alert."""
        service, tag, environment = event["service"], event["tag"], event["environment"]
        accepted = self.accepts(environment)
        outcome = event["status"] if kind == "deployment" else event["result"]
        earlier = await asyncio.to_thread(self._record, kind, event, actor, reason, accepted, outcome)
        if earlier is not None:  # (the same event_id again: answered as it was)
            return self._answer(earlier[0], kind, environment, earlier[1])
        text = messages.out_of_band_alert(kind, service, tag, environment, outcome, actor, reason, accepted, event)
        await self.notifications.alert_approvers(environment, self.ctx.service_config(service).channel, text)
        return self._answer(accepted, kind, environment, reason)

    def _record(
        self, kind: str, event: dict[str, Any], actor: str, reason: str, accepted: bool, outcome: str
    ) -> tuple[bool, str] | None:
        """Record the report (audited); or, for an event_id recorded before, (accepted, reason) as it was."""
        service, tag, environment = event["service"], event["tag"], event["environment"]
        event_id = event.get("event_id")
        if event_id:
            with Session(self.ctx.db) as s:
                earlier = s.exec(select(OutOfBandReport).where(col(OutOfBandReport.event_id) == event_id)).first()
            if earlier is not None:
                return earlier.accepted, earlier.reason
        now = self.ctx.clock()
        try:
            with transaction(self.ctx.db) as s:
                s.add(
                    OutOfBandReport(
                        event_id=event_id,
                        kind=kind,
                        service=service,
                        tag=tag,
                        environment=environment,
                        outcome=outcome,
                        run_id=None if event.get("run_id") is None else str(event["run_id"]),
                        url=event.get("url"),
                        promotion_id=event.get("promotion_id"),
                        reason=reason,
                        accepted=accepted,
                        reported_by=actor,
                        finished_at=event.get("finished_at") or now,
                        reported_at=now,
                    )
                )
                audit.append(
                    s,
                    at=now,
                    actor=actor,
                    action=f"{kind}.out_of_band" if accepted else f"{kind}.out_of_band_refused",
                    service=service,
                    environment=environment,
                    detail={
                        "tag": tag,
                        "outcome": outcome,
                        "run_id": event.get("run_id"),
                        "url": event.get("url"),
                        "reason": reason,
                        "accepted": accepted,
                    },
                )
        except IntegrityError:  # the same event_id at the same moment from a second replica
            return accepted, reason
        return None

    def _answer(self, accepted: bool, kind: str, environment: str, reason: str) -> str:
        if accepted:
            return "out_of_band"
        raise Conflict(messages.out_of_band_refusal(kind, environment, reason), rule=OUT_OF_BAND)
