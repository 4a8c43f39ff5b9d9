"""Scheduled work claimed by one replica: the first INSERT of a (job, run) key wins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from storage.db import transaction
from storage.models import JobClaim


def claim_run(engine: Engine, *, job: str, run_key: str, instance_id: str, now: datetime) -> bool:
    """Claim one run of a scheduled job for this instance; False when another instance already has it."""
    try:
        with transaction(engine) as s:
            s.add(JobClaim(job=job, run_key=run_key, claimed_by=instance_id, claimed_at=now))
        return True
    except IntegrityError:
        return False
