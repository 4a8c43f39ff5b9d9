"""Daily digests: schedules with day names in the digest's time zone, and a digest fired by the
scheduler at a controlled clock, posted exactly once by two scheduler instances on one database."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from bot.config import parse_config
from bot.config.schedule import digest_trigger
from bot.jobs.digests import DigestScheduler, last_fire_time
from storage.db import create_db_engine
from storage.models import JobClaim
from tests.fakes.slack_api import FakeSlack  # the `slack` fixture (tests/conftest.py) is one, reset per test
from tests.test_audit_chain import postgres_engine
from tests.test_metrics import build

BERLIN = ZoneInfo("Europe/Berlin")
CONFIG = """
environments:
  - name: dev
  - name: staging
    approval: automatic
  - name: production
    approval: manual
    approvers: [U0PLATFORMLEAD]
services:
  api:
    repository: acme/api
    image: registry.example.com/acme/api
    workflow: deploy.yml
    channel: C0DEPLOYS
  web:
    repository: acme/web
    image: registry.example.com/acme/web
    workflow: deploy.yml
    channel: C0DEPLOYS
digests:
  - channel: C0METRICS
    schedule: "0 2 * * mon-fri"
    timezone: Europe/Berlin
    window: 7d
"""
# Monday 9 June 2025, 02:00:30 in Berlin: 30 s after the digest's scheduled time
NOW = datetime(2025, 6, 9, 0, 0, 30, tzinfo=UTC)


def next_fire(schedule: str, after: datetime) -> datetime:
    return digest_trigger(schedule, "Europe/Berlin").get_next_fire_time(None, after)


def test_schedules_use_day_names_in_the_digest_time_zone() -> None:
    friday_evening = datetime(2025, 6, 6, 18, 0, tzinfo=BERLIN)
    monday_nine = datetime(2025, 6, 9, 9, 0, tzinfo=BERLIN)
    assert next_fire("0 9 * * mon-fri", friday_evening) == monday_nine
    # crontab numbers mean what they mean in crontab (1 = Monday, 0 and 7 = Sunday)
    assert next_fire("0 9 * * 1-5", friday_evening) == monday_nine
    assert next_fire("0 9 * * 0", friday_evening) == datetime(2025, 6, 8, 9, 0, tzinfo=BERLIN)
    assert next_fire("0 9 * * 7", friday_evening) == datetime(2025, 6, 8, 9, 0, tzinfo=BERLIN)
    assert next_fire("30 8 * * sat,sun", friday_evening) == datetime(2025, 6, 7, 8, 30, tzinfo=BERLIN)
    assert next_fire("0 9 * * */2", friday_evening) == datetime(2025, 6, 7, 9, 0, tzinfo=BERLIN)  # sun,tue,thu,sat
    # the run a firing belongs to: the latest scheduled time, within the misfire grace
    trigger = digest_trigger("0 9 * * mon-fri", "Europe/Berlin")
    assert last_fire_time(trigger, monday_nine + timedelta(seconds=40)) == monday_nine
    assert last_fire_time(trigger, monday_nine - timedelta(seconds=1)) is None
    assert last_fire_time(trigger, monday_nine + timedelta(hours=1)) is None
    with pytest.raises(ValueError, match="schedule '0 9 \\* mon-fri'"):
        next_fire("0 9 * mon-fri", friday_evening)
    with pytest.raises(ValueError, match="schedule '0 25 \\* \\* \\*'"):
        next_fire("0 25 * * *", friday_evening)


@contextmanager
def replicas(kind: str, tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one database with the metrics test history, as two replicas would have."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'digests.db'}"
        first, second = create_db_engine(url), create_db_engine(url)
        SQLModel.metadata.create_all(first)
        build(first)
        yield first, second
        first.dispose()
        second.dispose()
    else:
        with postgres_engine() as first:
            build(first)
            second = create_db_engine(first.url.render_as_string(hide_password=False))
            yield first, second
            second.dispose()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def text_of(block: dict) -> str:
    parts = [block.get("text", {}).get("text", "")] + [f["text"] for f in block.get("fields", [])]
    parts += [e.get("text", "") for e in block.get("elements", [])]
    return "\n".join(parts)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_two_schedulers_post_the_digest_exactly_once(kind: str, tmp_path: Path, slack: FakeSlack) -> None:
    config = parse_config(CONFIG)
    with replicas(kind, tmp_path) as engines:
        schedulers = [
            DigestScheduler(
                engine,
                config,
                AsyncWebClient(token=slack.bot_token, base_url=slack.api_url),
                instance_id=f"replica-{n}",
                clock=lambda: NOW,
            )
            for n, engine in enumerate(engines)
        ]
        finished: list[object] = []
        for s in schedulers:
            s.start()
            s.scheduler.add_listener(finished.append, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
            job = s.scheduler.get_job(s.job_id(0, config.digests[0]))
            # the trigger's own next run, then "now" so the test need not wait for 02:00 in Berlin
            assert job.next_run_time > datetime.now(UTC)
            job.modify(next_run_time=datetime.now(UTC))
        try:
            for _ in range(500):
                if len(finished) == 2:
                    break
                await asyncio.sleep(0.02)
        finally:
            for s in schedulers:
                s.shutdown()
        assert [getattr(e, "exception", None) for e in finished] == [None, None]

        messages, files = slack.messages("C0METRICS"), slack.files()
        assert len(messages) == 1 and len(files) == 1, slack.calls()
        with Session(engines[0]) as session:
            claims = session.query(JobClaim).all()
        assert [(c.job, c.run_key) for c in claims] == [("digest:0:C0METRICS", "2025-06-09T00:00:00+00:00")]
        assert claims[0].claimed_by in ("replica-0", "replica-1")
        # the run is taken: firing it again posts nothing
        assert not await schedulers[0].fire(0, datetime(2025, 6, 9, 0, 0, tzinfo=UTC))

    blocks = messages[0]["blocks"]
    texts = [text_of(b) for b in blocks]
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["text"] == "Promotion digest · Mon 09 Jun 2025"
    assert "Mon 02 Jun 02:00 – Mon 09 Jun 02:00 (Europe/Berlin) · all services" in texts[1]
    production, staging, dora = texts[2], texts[3], texts[4]
    assert production.startswith("*Production*")
    assert "*Promotion frequency*\n3.0 a week (3 in 7 days)\n:white_check_mark: target weekly or more" in production
    assert "*Success rate*\n40.0% (2 of 5 not rolled back)\n:x: target > 95%" in production
    assert "*Time to promote*\n3.5h median, p90 2.9d (n=4)\n:white_check_mark: target < 1 day" in production
    assert "*Approval duration*\n20m median, p90 2.0h (n=6)\n:white_check_mark: target < 1 hour" in production
    assert staging.startswith("*Staging*") and "100.0% (1 of 1 not rolled back)" in staging
    assert "*Approval duration*\nnone in this period\n:heavy_minus_sign: target < 1 hour" in staging
    assert "*DORA (production)*" in dora and "5.0 a week" in dora and "6.5h median (n=4)" in dora
    assert "60.0% (3 of 5)" in dora and "1.7h median, 1 not restored" in dora
    missed = next(t for t in texts if t.startswith("*Missed targets (2)*"))
    assert "• `api` production: success rate 50.0% (target > 95%)" in missed
    assert (
        "• `web` production: promotion frequency 0.0/week (target weekly or more), success rate 0.0% "
        "(target > 95%), approval duration 2.0h (target < 1 hour)" in missed
    )
    slowest = next(t for t in texts if t.startswith("*Slowest approvals*"))
    assert slowest.splitlines()[1:3] == ["• `P2` api `a2` → production: 2.0h", "• `W2` web `b1` → production: 2.0h"]
    failed = next(t for t in texts if t.startswith("*Failed verifications (2)*"))
    assert failed.splitlines()[1:] == [
        "• web `b1` in production, Wed 04 Jun 17:00",
        "• api `a2` in production, Tue 03 Jun 15:00",
    ]
    rollbacks = next(t for t in texts if t.startswith("*Rollbacks (1)*"))
    assert rollbacks.splitlines()[1] == "• `R1` api production: back to `a1` from `a2` — verified"
    assert "Audit chain head: event 0" in texts[-1]
    assert messages[0]["text"].startswith(
        "Promotion digest Mon 02 Jun 02:00 – Mon 09 Jun 02:00: production: 3 verified"
    )

    image = files[0]
    assert image["channel_id"] == "C0METRICS"
    assert image["filename"] == "promotion-digest-2025-06-09.png"
    assert image["title"] == "Promotions per day and time to promote, 09 Jun 2025"
    assert png_size(image["bytes"]) == (900, 520)


FIRE = datetime(2025, 6, 9, 0, 0, tzinfo=UTC)  # 02:00 in Berlin


def scheduler(engine: Engine, slack: FakeSlack, name: str, **kw) -> DigestScheduler:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    return DigestScheduler(engine, parse_config(CONFIG), client, instance_id=name, clock=lambda: NOW, **kw)


async def test_a_digest_slack_refused_is_posted_on_a_retry(tmp_path: Path, slack: FakeSlack) -> None:
    with replicas("sqlite", tmp_path) as (engine, _):
        slack.fail_next("chat.postMessage", error="internal_error", status=500, retry_after=None)
        assert await scheduler(engine, slack, "replica-0", retry_wait=0.05).deliver(0, FIRE)
        assert len(slack.messages("C0METRICS")) == 1 and len(slack.files()) == 1
        with Session(engine) as session:
            claim = session.get(JobClaim, ("digest:0:C0METRICS", FIRE.isoformat()))
            assert claim is not None and claim.completed_at is not None


async def test_a_retry_after_the_message_went_out_posts_only_what_is_missing(tmp_path: Path, slack: FakeSlack) -> None:
    with replicas("sqlite", tmp_path) as (engine, other):
        # the message goes out, then the chart's upload fails, and this replica never gets to retry
        slack.fail_next("files.getUploadURLExternal", error="internal_error", status=500, retry_after=None)
        first = scheduler(engine, slack, "replica-0", retry_wait=0.05)
        assert not await first.deliver(0, FIRE, give_up_after=timedelta(0))
        assert len(slack.messages("C0METRICS")) == 1 and slack.files() == []
        # another replica finds the run unfinished once the claim's lease runs out, and completes it
        second = scheduler(other, slack, "replica-1", lease=timedelta(0), retry_wait=0.05)
        assert await second.deliver(0, FIRE)
        assert len(slack.messages("C0METRICS")) == 1  # the digest itself was not posted twice
        assert [f["filename"] for f in slack.files()] == ["promotion-digest-2025-06-09.png"]
        # and a third try, for whatever reason, posts nothing
        assert not await second.fire(0, FIRE)
        assert len(slack.messages("C0METRICS")) == 1 and len(slack.files()) == 1
