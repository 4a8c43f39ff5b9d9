"""Automatic rollback requests: a failed production deployment or verification asks at once for the
last known-good artifact, through the same gates and approval as ``/rollback``.

The transition that fails the promotion also queues the request in its own
transaction (a ``JobClaim`` row keyed by the failed promotion), so the request
survives a crash right after the commit. ``process`` opens it exactly once,
whichever replica gets there first; the tracking pass picks up what a dead
replica left queued.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.config import PromobotConfig
from bot.text import esc, evidence_text
from storage import audit
from storage.db import transaction
from storage.models import JobClaim, Promotion

if TYPE_CHECKING:
    from bot.promotions import PromotionService


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
    if p.kind == "rollback" or not is_production(config, p.target_environment):
        return False
    s.add(JobClaim(job=JOB, run_key=p.id, claimed_by=QUEUED, claimed_at=now))
    return True


async def after_failure(service: "PromotionService", promotion_id: str) -> None:
    """Called by the replica whose transition failed the promotion: open the queued rollback request,
    or, when a rollback itself failed, tell the approvers that production needs a person."""
    p = service._promotion(promotion_id)
    if p is None or not is_production(service.config, p.target_environment):
        return
    if p.kind != "rollback":
        await process(service, promotion_id)
        return
    svc = service.config.services[p.service]
    await _alert_approvers(service, p, svc.channel,
                           f":rotating_light: The rollback of {p.service} to `{p.tag}` in {p.target_environment} "
                           f"(`{p.id}`) failed: {p.reason}. promobot does not retry a rollback by itself: check "
                           f"the run{f' <{p.run_url}|{p.pipeline_run_id}>' if p.run_url else ''} and act by hand.")


async def process_pending(service: "PromotionService") -> int:
    """Open every queued rollback request that no live replica is handling; returns how many."""
    now = service.clock()
    with Session(service.engine) as s:
        keys = list(s.exec(select(JobClaim.run_key).where(
            JobClaim.job == JOB, JobClaim.claimed_by != DONE,
            sa.or_(sa.and_(JobClaim.claimed_by == QUEUED, col(JobClaim.claimed_at) < now - ORPHANED_AFTER),
                   col(JobClaim.claimed_at) < now - LEASE))))
    opened = 0
    for promotion_id in keys:
        opened += bool(await process(service, promotion_id))
    return opened


def _claim(service: "PromotionService", promotion_id: str) -> bool:
    now = service.clock()
    with transaction(service.engine) as s:
        result = s.execute(sa.update(JobClaim).where(
            JobClaim.job == JOB, JobClaim.run_key == promotion_id, JobClaim.claimed_by != DONE,
            sa.or_(JobClaim.claimed_by == QUEUED, JobClaim.claimed_at < now - LEASE))
            .values(claimed_by=service.instance_id, claimed_at=now))
        return result.rowcount == 1


async def process(service: "PromotionService", promotion_id: str) -> str | None:
    """Open the queued rollback request for the failed ``promotion_id`` unless another replica has it.
    Returns the rollback's promotion id when one was opened."""
    if not _claim(service, promotion_id):
        return None
    p = service._promotion(promotion_id)
    earlier = _earlier_request(service, promotion_id)  # opened before a crash, not yet marked done
    rollback_id, detail = (earlier, {"rollback_id": earlier}) if earlier else await _request(service, p)
    with transaction(service.engine) as s:
        s.execute(sa.update(JobClaim).where(JobClaim.job == JOB, JobClaim.run_key == promotion_id)
                  .values(claimed_by=DONE))
        audit.append(s, at=service.clock(), actor="promobot", action="rollback.automatic", promotion_id=p.id,
                     service=p.service, environment=p.target_environment, detail={"failed": p.reason, **detail})
    return rollback_id


def _earlier_request(service: "PromotionService", promotion_id: str) -> str | None:
    with Session(service.engine) as s:
        return s.exec(select(Promotion.id).where(Promotion.kind == "rollback", Promotion.requested_by == "promobot",
                                                 col(Promotion.reason).contains(promotion_id))).first()


async def _request(service: "PromotionService", p: Promotion) -> tuple[str | None, dict]:
    from bot.promotions import UserError
    svc = service.config.services[p.service]
    env = p.target_environment
    what = f"{p.reason or 'failed'} for {p.service} `{p.tag}` in {env} (`{p.id}`)"
    headline = f":rotating_light: {what[0].upper()}{what[1:]}."
    try:
        result = await service.request("promobot", p.service, None, env, kind="rollback",
                                       reason=f"automatic: {what}")
    except UserError as exc:
        await _alert_approvers(service, p, svc.channel,
                               f"{headline} No rollback was requested: {esc(exc)} "
                               "Production needs a person: fix forward, or deploy a good artifact by hand.")
        return None, {"refused": str(exc)}
    tag = result.report.tag
    if result.outcome == "refused":
        # gate reasons quote lock and hold reasons people typed: escaped, only recorded users mentioned
        reasons = "\n".join(f"• {r.title}: {evidence_text(r.reason, r.evidence)}"
                             for r in result.report.blocking) or esc(result.message)
        await _alert_approvers(service, p, svc.channel,
                               f"{headline} The rollback to the last known-good "
                               f"`{tag}` was refused:\n{reasons}\nWhen that is resolved: "
                               f"`/rollback {p.service} {tag} in {env}`.")
        return None, {"tag": tag, "refused": result.message or reasons}
    await service._announce(p.id, f"Rollback to `{tag}` requested: `{result.promotion_id}`.")
    env_config = service.config.environment(env)
    await service._alert(svc.channel, f"{headline} promobot requested a rollback "
                                      f"to the last known-good `{tag}`: `{result.promotion_id}`. "
                                      f"{_mentions(env_config.approvers)}: please decide on its card.")
    return result.promotion_id, {"rollback_id": result.promotion_id, "tag": tag}


async def _alert_approvers(service: "PromotionService", p: Promotion, channel: str, text: str) -> None:
    """The channel, with the approvers mentioned, and a direct message to each approver."""
    approvers = service.config.environment(p.target_environment).approvers
    await service._alert(channel, f"{text} {_mentions(approvers)}".strip())
    for user in sorted(await service._approver_users(approvers)):
        await service._tell(user, text)


def _mentions(ids: list[str]) -> str:
    return " ".join(f"<!subteam^{a}>" if a.startswith("S") else f"<@{a}>" for a in ids)
