"""Retention through the real server: audit events are kept two calendar years (not 730 days), and the
purge archives what it removes in the directory PROMOBOT_AUDIT_ARCHIVE_DIR names."""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from sqlmodel import Session, select

from bot.jobs.retention import archive_problem
from bot.server import make_web_app
from storage import audit
from storage.db import transaction
from storage.models import AuditEvent, JobClaim
from tests.harness import free_port

ARCHIVE = Path(tempfile.mkdtemp(prefix="promobot-archive-"))
# across the leap day of 2024: 730 days before 15 February 2026 is 16 February 2024, two calendar years
# is 15 February 2024
NOW = datetime(2026, 2, 15, 12, 0, tzinfo=UTC)
OLDER = datetime(2024, 2, 15, 6, 0, tzinfo=UTC)  # more than two calendar years: purged
WITHIN = datetime(2024, 2, 16, 0, 0, tzinfo=UTC)  # more than 730 days, less than two calendar years: kept


async def until(predicate, timeout: float = 10.0):
    for _ in range(int(timeout / 0.05)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s")


@pytest.mark.parametrize("settings_overrides", [{"promobot_audit_archive_dir": str(ARCHIVE)}])
async def test_the_server_keeps_two_calendar_years_and_archives_where_configured(harness):
    h = harness
    # the harness's own server ran today's pass at its start; only then are the old events written
    await until(lambda: _claimed(h, datetime.now(UTC).date().isoformat()))
    await asyncio.sleep(0.5)  # that pass found nothing old and ended
    with transaction(h.bot.engine) as s:
        for at, what in ((OLDER, "older than two calendar years"), (WITHIN, "older than 730 days only")):
            audit.append(
                s, at=at, actor="U0LEAD", action="environment.locked", service="api-gateway", detail={"why": what}
            )
    # a replica starts on that day: its purge pass runs at once
    h.clock.fixed = NOW
    runner = web.AppRunner(make_web_app(h.bot), shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", free_port()).start()
    try:
        archive = ARCHIVE / "audit-20260215.jsonl"
        await until(archive.exists)
        await until(lambda: "audit.purged" in [e.action for e in _events(h)])
    finally:
        await runner.cleanup()
    archived = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [a["detail"]["why"] for a in archived] == ["older than two calendar years"]
    kept = [e.detail.get("why") for e in _events(h) if e.action == "environment.locked"]
    assert kept == ["older than 730 days only"]
    with Session(h.bot.engine) as s:
        assert audit.verify(s) is None  # the rest of the chain still verifies from its anchor


def _claimed(h, day: str) -> bool:
    with Session(h.bot.engine) as s:
        return s.get(JobClaim, ("audit-purge", day)) is not None


def _events(h) -> list[AuditEvent]:
    with Session(h.bot.engine) as s:
        return list(s.exec(select(AuditEvent).order_by(AuditEvent.seq)))


def test_an_unwritable_archive_directory_is_named_at_start(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    problem = archive_problem(blocked / "archive")
    assert problem and "PROMOBOT_AUDIT_ARCHIVE_DIR" in problem and str(blocked / "archive") in problem
    assert archive_problem(tmp_path / "fine") is None and (tmp_path / "fine").is_dir()
