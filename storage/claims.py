"""Scheduled work claimed by one replica: the first INSERT of a (job, run) key wins."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from storage.db import rowcount, transaction
from storage.models import JobClaim, PipelineEvent


def claim_run(engine: Engine, *, job: str, run_key: str, instance_id: str, now: datetime) -> bool:
    """Claim one run of a scheduled job for this instance; False when another instance already has it."""
    try:
        with transaction(engine) as s:
            s.add(JobClaim(job=job, run_key=run_key, claimed_by=instance_id, claimed_at=now))
        return True
    except IntegrityError:
        return False


def claim_until_done(
    engine: Engine, *, job: str, run_key: str, instance_id: str, now: datetime, lease: timedelta
) -> str | None:
    """Claim a run whose work must happen at least once: "new" for the first claim, "retake" when an earlier
    claim never completed (its holder failed or died: its lease ran out, or it is this instance), None when the
    run is done or another live instance holds it."""
    try:
        with transaction(engine) as s:
            s.add(JobClaim(job=job, run_key=run_key, claimed_by=instance_id, claimed_at=now))
        return "new"
    except IntegrityError:
        pass
    with transaction(engine) as s:
        retaken = s.execute(
            sa.update(JobClaim)
            .where(
                col(JobClaim.job) == job,
                col(JobClaim.run_key) == run_key,
                col(JobClaim.completed_at).is_(None),
                sa.or_(col(JobClaim.claimed_by) == instance_id, col(JobClaim.claimed_at) <= now - lease),
            )
            .values(claimed_by=instance_id, claimed_at=now)
        )
        return "retake" if rowcount(retaken) == 1 else None


def complete_run(engine: Engine, *, job: str, run_key: str, now: datetime) -> None:
    with transaction(engine) as s:
        s.execute(
            sa.update(JobClaim)
            .where(col(JobClaim.job) == job, col(JobClaim.run_key) == run_key)
            .values(completed_at=now)
        )


def run_completed(engine: Engine, *, job: str, run_key: str) -> bool:
    with transaction(engine) as s:
        claim = s.get(JobClaim, (job, run_key))
        return claim is not None and claim.completed_at is not None


def first_delivery(engine: Engine, *, key: str, kind: str, body: bytes, now: datetime) -> bool:
    """First sight of a delivery (a GitHub delivery id, a Slack event id) on any replica; False for a
    redelivery or a twin arriving at the same moment."""
    try:
        with transaction(engine) as s:
            if s.get(PipelineEvent, key) is not None:
                return False
            s.add(PipelineEvent(event_id=key, type=kind, body_sha256=hashlib.sha256(body).hexdigest(), received_at=now))
        return True
    except IntegrityError:
        return False


def forget_delivery(engine: Engine, *, key: str) -> None:
    """Forget a delivery that could not be handled, so that its redelivery is."""
    with transaction(engine) as s:
        s.execute(sa.delete(PipelineEvent).where(col(PipelineEvent.event_id) == key))
