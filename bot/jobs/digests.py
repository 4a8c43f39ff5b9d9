"""Daily digests: the period's promotion metrics posted to a channel on a cron schedule.

Each entry of ``digests:`` becomes an APScheduler job. Every replica runs the
same jobs; when one fires, the replica first claims the run (a ``JobClaim`` row
keyed by the job and its scheduled fire time), posts, then marks the run done.
A post that fails is retried; a claim that never completes (its replica died)
is taken over once its lease runs out. Either way the retake first looks in the
channel for what was already posted, so a digest is posted at least once and
never twice.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.clock import utcnow
from bot.config import DigestConfig, PromobotConfig
from bot.config.schedule import digest_trigger
from handlers.blocks.chart import digest_chart
from handlers.blocks.digest import digest_blocks, digest_text
from storage.claims import claim_until_done, complete_run, run_completed
from storage.metrics.digest import Digest, compute_digest

log = logging.getLogger(__name__)

MISFIRE_GRACE = timedelta(minutes=15)  # a replica that wakes later than this skips the run
CLAIM_LEASE = timedelta(minutes=2)  # a claim not completed by then belonged to a replica that failed or died
RETRY_FOR = timedelta(hours=1)  # how long a run keeps being retried
WATCH_EVERY = 1.0  # seconds between looks at a run another replica is posting
DIGEST_EVENT = "promobot_digest"  # message metadata that says which run a posted digest belongs to


def last_fire_time(trigger: CronTrigger, now: datetime, lookback: timedelta = MISFIRE_GRACE) -> datetime | None:
    """The latest scheduled time at or before ``now`` and within ``lookback``: the run a firing belongs to."""
    fire, last = trigger.get_next_fire_time(None, now - lookback), None
    while fire is not None and fire <= now:
        last, fire = fire, trigger.get_next_fire_time(fire, fire)
    return last


async def _call(method: Callable[..., Any], **kwargs: Any) -> Any:
    # works with slack_sdk's WebClient and AsyncWebClient alike
    result = method(**kwargs)
    return await result if inspect.isawaitable(result) else result


class DigestScheduler:
    """One APScheduler cron job per configured digest; each run is posted by exactly one replica."""

    def __init__(
        self,
        engine: Engine,
        config: PromobotConfig,
        slack_client: Any,
        instance_id: str,
        clock: Callable[[], datetime] = utcnow,
        scheduler: AsyncIOScheduler | None = None,
        lease: timedelta = CLAIM_LEASE,
        retry_wait: float = 30.0,
    ):
        self.engine = engine
        self.config = config
        self.client = slack_client
        self.instance_id = instance_id
        self.clock = clock
        self.scheduler = scheduler or AsyncIOScheduler(timezone=UTC)
        self.lease = lease
        self.retry_wait = retry_wait  # seconds before the first retry of a failed post; doubles
        self.triggers = [digest_trigger(d.schedule, d.timezone) for d in config.digests]

    @staticmethod
    def job_id(index: int, digest: DigestConfig) -> str:
        return f"digest:{index}:{digest.channel}"

    def start(self) -> None:
        """Add the jobs and start the scheduler; call from inside the running event loop."""
        for i, (digest, trigger) in enumerate(zip(self.config.digests, self.triggers)):
            self.scheduler.add_job(
                self._run,
                trigger,
                args=[i],
                id=self.job_id(i, digest),
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=int(MISFIRE_GRACE.total_seconds()),
            )
        if not self.scheduler.running:
            self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def _run(self, index: int) -> None:
        fire_time = last_fire_time(self.triggers[index], self.clock())
        if fire_time is None:
            log.warning("digest %s fired more than %s after its schedule; skipped", index, MISFIRE_GRACE)
            return
        await self.deliver(index, fire_time)

    async def deliver(self, index: int, fire_time: datetime, *, give_up_after: timedelta = RETRY_FOR) -> bool:
        """Post the run until it is posted (by this replica or another): a failed post is retried with backoff,
        a run another replica holds is watched until it is done or its claim can be taken over. Gives up after
        ``give_up_after``; True when the run is done."""
        digest = self.config.digests[index]
        job, run_key = self.job_id(index, digest), fire_time.astimezone(UTC).isoformat()
        loop = asyncio.get_running_loop()
        deadline, backoff = loop.time() + give_up_after.total_seconds(), self.retry_wait
        while True:
            try:
                if await self.fire(index, fire_time):
                    return True
                if await asyncio.to_thread(run_completed, self.engine, job=job, run_key=run_key):
                    return True  # another replica posted it
                wait = WATCH_EVERY  # another replica is on it; if it dies, its lease runs out for a retake
            except Exception:
                log.exception("digest %s for %s failed; it is tried again", index, run_key)
                wait, backoff = backoff, min(backoff * 2, self.lease.total_seconds())
            if loop.time() + wait > deadline:
                log.error("digest %s for %s was not posted within %s", index, run_key, give_up_after)
                return False
            await asyncio.sleep(wait)

    async def fire(self, index: int, fire_time: datetime) -> bool:
        """Post digest ``index`` for the run scheduled at ``fire_time``, at least once and never twice: the run is
        claimed, posted, then marked done. A retake of a run that was not marked done first looks in the channel
        for what the earlier attempt already posted (the message's metadata, the chart's file name). True when
        this instance completed the run."""
        digest = self.config.digests[index]
        job, run_key = self.job_id(index, digest), fire_time.astimezone(UTC).isoformat()
        claim = await asyncio.to_thread(
            claim_until_done,
            self.engine,
            job=job,
            run_key=run_key,
            instance_id=self.instance_id,
            now=self.clock(),
            lease=self.lease,
        )
        if claim is None:
            log.info("digest %s at %s is done or another instance is posting it", index, run_key)
            return False
        content, png = await asyncio.to_thread(self._render, digest, fire_time)
        marker = {"event_type": DIGEST_EVENT, "event_payload": {"job": job, "run": run_key}}
        if claim == "new" or not await self._message_posted(digest.channel, fire_time, marker):
            await _call(
                self.client.chat_postMessage,
                channel=digest.channel,
                text=digest_text(content),
                blocks=digest_blocks(content),
                metadata=marker,
            )
        filename = f"promotion-digest-{content.local(fire_time, '%Y-%m-%d')}.png"
        if claim == "new" or not await self._chart_posted(digest.channel, fire_time, filename):
            await _call(
                self.client.files_upload_v2,
                channel=digest.channel,
                file=png,
                filename=filename,
                title=f"Promotions per day and time to promote, {content.local(fire_time, '%d %b %Y')}",
                alt_txt="Bar chart of promotions per day; line of the daily mean time to promote against "
                "the one-day target",
            )
        await asyncio.to_thread(complete_run, self.engine, job=job, run_key=run_key, now=self.clock())
        return True

    async def _message_posted(self, channel: str, since: datetime, marker: dict) -> bool:
        """Whether an earlier attempt's digest message is in the channel already (found by its metadata)."""
        cursor = None
        while True:
            page = await _call(
                self.client.conversations_history,
                channel=channel,
                oldest=f"{since.timestamp() - 60:.6f}",
                include_all_metadata=True,
                limit=200,
                cursor=cursor,
            )
            for message in page.get("messages") or []:
                if message.get("metadata") == marker:
                    return True
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return False

    async def _chart_posted(self, channel: str, since: datetime, filename: str) -> bool:
        page = await _call(self.client.files_list, channel=channel, ts_from=str(int(since.timestamp()) - 60), count=100)
        return any(f.get("name") == filename for f in page.get("files") or [])

    def _render(self, digest: DigestConfig, end: datetime) -> tuple[Digest, bytes]:
        with Session(self.engine) as s:
            content = compute_digest(s, digest=digest, environments=self.config.environment_names, end=end)
        png = digest_chart(content.series, title=f"Promotions per day and time to promote ({digest.timezone})")
        return content, png
