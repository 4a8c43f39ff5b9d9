"""Daily digests: the period's promotion metrics posted to a channel on a cron schedule.

Each entry of ``digests:`` becomes an APScheduler job. Every replica runs the
same jobs; when one fires, the replica first inserts a ``JobClaim`` row keyed
by the job and its scheduled fire time. The primary key lets exactly one
INSERT succeed, so exactly one replica posts; the others skip that run.
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
from storage.claims import claim_run
from storage.metrics.digest import Digest, compute_digest

log = logging.getLogger(__name__)

MISFIRE_GRACE = timedelta(minutes=15)  # a replica that wakes later than this skips the run


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
    ):
        self.engine = engine
        self.config = config
        self.client = slack_client
        self.instance_id = instance_id
        self.clock = clock
        self.scheduler = scheduler or AsyncIOScheduler(timezone=UTC)
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
        try:
            await self.fire(index, fire_time)
        except Exception:
            log.exception("digest %s for %s failed", index, fire_time.isoformat())

    async def fire(self, index: int, fire_time: datetime) -> bool:
        """Post digest ``index`` for the run scheduled at ``fire_time`` unless another replica claimed
        that run first; True when this instance posted it."""
        digest = self.config.digests[index]
        run_key = fire_time.astimezone(UTC).isoformat()
        claimed = await asyncio.to_thread(
            claim_run,
            self.engine,
            job=self.job_id(index, digest),
            run_key=run_key,
            instance_id=self.instance_id,
            now=self.clock(),
        )
        if not claimed:
            log.info("digest %s at %s was claimed by another instance", index, run_key)
            return False
        content, png = await asyncio.to_thread(self._render, digest, fire_time)
        await _call(
            self.client.chat_postMessage,
            channel=digest.channel,
            text=digest_text(content),
            blocks=digest_blocks(content),
        )
        await _call(
            self.client.files_upload_v2,
            channel=digest.channel,
            file=png,
            filename=f"promotion-digest-{content.local(fire_time, '%Y-%m-%d')}.png",
            title=f"Promotions per day and time to promote, {content.local(fire_time, '%d %b %Y')}",
            alt_txt="Bar chart of promotions per day; line of the daily mean time to promote against "
            "the one-day target",
        )
        return True

    def _render(self, digest: DigestConfig, end: datetime) -> tuple[Digest, bytes]:
        with Session(self.engine) as s:
            content = compute_digest(s, digest=digest, environments=self.config.environment_names, end=end)
        png = digest_chart(content.series, title=f"Promotions per day and time to promote ({digest.timezone})")
        return content, png
