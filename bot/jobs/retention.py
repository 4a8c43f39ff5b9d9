"""The scheduled audit purge: once a day, events older than the retention go to an archive file."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from storage.claims import claim_run
from storage.models import AuditEvent
from storage.retention import PurgeResult, purge, retention_cutoff

log = logging.getLogger(__name__)


def archive_problem(archive_dir: Path) -> str | None:
    """Why the purge could not write its archive in ``archive_dir`` (created if missing), or None."""
    try:
        archive_dir.mkdir(parents=True, exist_ok=True)
        probe = archive_dir / f".promobot-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return (
            f"the audit archive directory {archive_dir} is not writable ({exc.strerror or exc}): the daily purge "
            "of events older than two years will fail. Point PROMOBOT_AUDIT_ARCHIVE_DIR at a writable, "
            "persistent volume."
        )
    return None


def purge_once(engine: Engine, *, archive_dir: Path, instance_id: str, now: datetime) -> PurgeResult | None:
    """Today's purge, if no replica has claimed it yet; None when another one has."""
    if not claim_run(engine, job="audit-purge", run_key=now.date().isoformat(), instance_id=instance_id, now=now):
        return None
    with Session(engine) as s:
        oldest = s.exec(select(sa.func.min(col(AuditEvent.at)))).one()
    if oldest is None or oldest >= retention_cutoff(now):
        return PurgeResult(0, None, None, None, archive_dir)
    archive_dir.mkdir(parents=True, exist_ok=True)
    result = purge(
        engine, older_than=retention_cutoff(now), archive_path=archive_dir / f"audit-{now:%Y%m%d}.jsonl", now=now
    )
    if result.events:
        log.info(
            "audit purge: %s events (%s–%s) archived to %s",
            result.events,
            result.first_seq,
            result.last_seq,
            result.archive_path,
        )
    return result


async def run(
    stop: asyncio.Event,
    *,
    engine: Engine,
    archive_dir: Path,
    instance_id: str,
    clock: Callable[[], datetime],
    interval: float = 3600.0,
) -> None:
    """Check hourly; the daily claim makes exactly one pass per day across replicas."""
    problem = archive_problem(archive_dir)
    if problem:
        log.error("%s", problem)
    while not stop.is_set():
        try:
            await asyncio.to_thread(purge_once, engine, archive_dir=archive_dir, instance_id=instance_id, now=clock())
        except Exception:
            log.exception("audit purge failed; it is tried again next hour")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass
