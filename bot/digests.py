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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from slack_sdk.models.blocks import (Block, ContextBlock, DividerBlock, HeaderBlock, MarkdownTextObject,
                                     SectionBlock)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot.charts import digest_chart
from bot.config import DigestConfig, PromobotConfig
from bot.text import esc
from storage import audit, metrics
from storage.db import transaction
from storage.metrics import DayPoint, Listing, MetricsReport, SlowApproval, human, percent
from storage.models import JobClaim

log = logging.getLogger(__name__)

CHART_DAYS = 14
MISFIRE_GRACE = timedelta(minutes=15)  # a replica that wakes later than this skips the run
MAX_SERVICE_LINES = 15
CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MARK = {True: ":white_check_mark:", False: ":x:", None: ":heavy_minus_sign:"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- schedule ---------------------------------------------------------------------------------


def _weekdays(field: str) -> str:
    """Crontab's numeric weekdays (0 and 7 are Sunday) as names, because APScheduler 3 counts
    from Monday; names and ranges of names pass through."""
    out: list[str] = []
    for item in field.split(","):
        span, _, step = item.partition("/")
        if span == "*" and not step:
            return "*"
        lo, _, hi = ("0-6" if span == "*" else span).partition("-")
        if not lo.isdigit() or not (hi.isdigit() or not hi):
            out.append(item)
            continue
        hi = hi or ("6" if step else lo)
        out.extend(CRON_DAYS[n % 7] for n in range(int(lo), int(hi) + 1, int(step or 1)))
    return ",".join(dict.fromkeys(out))


def digest_trigger(digest: DigestConfig) -> CronTrigger:
    """The digest's cron schedule (``0 9 * * mon-fri``) in its time zone; raises ValueError naming the
    problem for a schedule APScheduler cannot read."""
    fields = digest.schedule.split()
    if len(fields) != 5:
        raise ValueError(f"schedule {digest.schedule!r}: expected 5 fields (minute hour day month weekday)")
    try:
        return CronTrigger.from_crontab(" ".join(fields[:4] + [_weekdays(fields[4])]),
                                        timezone=ZoneInfo(digest.timezone))
    except ValueError as exc:
        raise ValueError(f"schedule {digest.schedule!r}: {exc}") from None


def last_fire_time(trigger: CronTrigger, now: datetime, lookback: timedelta = MISFIRE_GRACE) -> datetime | None:
    """The latest scheduled time at or before ``now`` and within ``lookback``: the run a firing belongs to."""
    fire, last = trigger.get_next_fire_time(None, now - lookback), None
    while fire is not None and fire <= now:
        last, fire = fire, trigger.get_next_fire_time(fire, fire)
    return last


def claim_run(engine: Engine, *, job: str, run_key: str, instance_id: str, now: datetime) -> bool:
    """Claim one run of a scheduled job for this instance; False when another instance already has it."""
    try:
        with transaction(engine) as s:
            s.add(JobClaim(job=job, run_key=run_key, claimed_by=instance_id, claimed_at=now))
        return True
    except IntegrityError:
        return False


# --- content ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """One period's numbers for one digest: everything its message and chart show."""

    config: DigestConfig
    start: datetime
    end: datetime
    environments: list[str]  # most important first: production, then the ones before it
    totals: MetricsReport  # per environment, all selected services together
    per_service: MetricsReport
    slowest: list[SlowApproval]
    failed: Listing
    rollbacks: Listing
    series: list[DayPoint]  # the last CHART_DAYS local days
    audit_head: tuple[int, str]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.timezone)

    def local(self, when: datetime, fmt: str = "%a %d %b %H:%M") -> str:
        return when.astimezone(self.zone).strftime(fmt)


def compute_digest(session: Session, *, digest: DigestConfig, environments: list[str], end: datetime) -> Digest:
    """The numbers for the period ``digest.window`` before ``end``, in aggregate queries."""
    services = digest.services or None
    start = end - digest.window
    production = environments[-1]
    local_end = end.astimezone(ZoneInfo(digest.timezone))
    chart_start = local_end.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=CHART_DAYS - 1)
    window = dict(start=start, end=end, services=services)
    return Digest(
        config=digest, start=start, end=end, environments=environments[::-1],
        totals=metrics.compute(session, **window, production=production, per_service=False),
        per_service=metrics.compute(session, **window, production=production),
        slowest=metrics.slowest_approvals(session, **window),
        failed=metrics.failed_verifications(session, **window, limit=5),
        rollbacks=metrics.rollbacks(session, **window, limit=5),
        series=metrics.daily_series(session, start=chart_start, end=end, services=services, production=production,
                                    utc_offset=local_end.utcoffset()),
        audit_head=audit.head_summary(session))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field(title: str, value: str, check: metrics.TargetCheck | None = None) -> MarkdownTextObject:
    target = f"\n{MARK[check.met]} target {check.goal}" if check else ""
    return MarkdownTextObject(text=_clip(f"*{title}*\n{value}{target}", 2000))


def _lines(title: str, lines: list[str], total: int | None = None) -> SectionBlock:
    more = f"\n…and {total - len(lines)} more" if total is not None and total > len(lines) else ""
    count = f" ({total})" if total is not None else ""
    return SectionBlock(text=MarkdownTextObject(text=_clip(f"*{title}{count}*\n" + "\n".join(lines) + more, 3000)))


def _link(url: str | None) -> str:
    return f" (<{url}|run>)" if url else ""


def _environment_section(environment: str, m: metrics.PromotionMetrics) -> SectionBlock:
    freq, success, ttp, approval = m.targets()
    kept = m.outcomes - m.rolled_back
    return SectionBlock(text=MarkdownTextObject(text=f"*{environment.capitalize()}*"), fields=[
        _field("Promotion frequency", f"{m.per_week:.1f} a week ({m.completed} in {m.weeks * 7:.0f} days)", freq),
        _field("Success rate", f"{percent(m.success_rate)} ({kept} of {m.outcomes} not rolled back)", success),
        _field("Time to promote", _spread(m.time_to_promote), ttp),
        _field("Approval duration", _spread(m.approval), approval),
    ])


def _spread(d: metrics.Durations) -> str:
    return f"{human(d.median)} median, p90 {human(d.p90)} (n={d.count})" if d.count else "none in this period"


def _dora_section(d: metrics.DoraMetrics) -> SectionBlock:
    restore = f"{human(d.time_to_restore.median)} median" if d.time_to_restore.count else "–"
    if d.open_incidents:
        restore += f", {d.open_incidents} not restored"
    return SectionBlock(text=MarkdownTextObject(text=f"*DORA ({d.environment})*"), fields=[
        _field("Deployment frequency", f"{d.per_week:.1f} a week"),
        _field("Lead time (build → production)", f"{human(d.lead_time.median)} median (n={d.lead_time.count})"),
        _field("Change failure rate", f"{percent(d.change_failure_rate)} ({d.failed_changes} of {d.changes})"),
        _field("Time to restore", restore),
    ])


def digest_blocks(d: Digest) -> list[Block]:
    """The digest message: per-environment numbers against their targets, DORA, services that missed a
    target, the slowest approvals, failed verifications and rollbacks."""
    scope = ", ".join(d.config.services) if d.config.services else "all services"
    blocks: list[Block] = [
        HeaderBlock(text=_clip(f"Promotion digest · {d.local(d.end, '%a %d %b %Y')}", 150)),
        ContextBlock(elements=[MarkdownTextObject(
            text=f"{d.local(d.start)} – {d.local(d.end)} ({d.config.timezone}) · {scope}")]),
    ]
    totals = {m.environment: m for m in d.totals.promotions}
    for environment in d.environments:
        if environment in totals:
            blocks.append(_environment_section(environment, totals[environment]))
    if not totals:
        blocks.append(SectionBlock(text=MarkdownTextObject(text="No promotions in this period.")))
    blocks += [_dora_section(x) for x in d.totals.dora]
    missed = [f"• `{m.service}` {m.environment}: " + ", ".join(f"{t.metric} {t.value} (target {t.goal})"
                                                               for t in m.targets() if t.met is False)
              for m in d.per_service.promotions if any(t.met is False for t in m.targets())]
    if missed:
        blocks.append(_lines("Missed targets", missed[:MAX_SERVICE_LINES], len(missed)))
    blocks.append(DividerBlock())
    if d.slowest:
        blocks.append(_lines("Slowest approvals", [
            f"• `{a.promotion_id}` {a.service} `{a.tag}` → {a.environment}: {human(a.duration)}" for a in d.slowest]))
    if d.failed.total:
        blocks.append(_lines("Failed verifications", [
            f"• {v.service} `{v.tag}` in {v.environment}, {d.local(v.finished_at)}" + _link(v.url)
            for v in d.failed.items], d.failed.total))
    if d.rollbacks.total:
        blocks.append(_lines("Rollbacks", [
            f"• `{r.promotion_id}` {r.service} {r.environment}: back to `{r.tag}`"
            + (f" from `{r.replaces_tag}`" if r.replaces_tag else "") + f" — {r.status}"
            + (f" ({esc(r.reason)})" if r.reason else "")
            for r in d.rollbacks.items], d.rollbacks.total))
    seq, head = d.audit_head
    blocks.append(ContextBlock(elements=[MarkdownTextObject(
        text=f"Audit chain head: event {seq:,}, hash `{head[:16]}` · chart: promotions per day and time to promote, "
             f"last {len(d.series)} days")]))
    return blocks


def digest_text(d: Digest) -> str:
    """The notification text (and the message for clients that cannot show blocks)."""
    totals = {m.environment: m for m in d.totals.promotions}
    parts = [f"{env}: {totals[env].completed} verified in {totals[env].weeks * 7:.0f} days, "
             f"success {percent(totals[env].success_rate)}" for env in d.environments if env in totals]
    return f"Promotion digest {d.local(d.start)} – {d.local(d.end)}: " + ("; ".join(parts) or "no promotions")


# --- scheduling --------------------------------------------------------------------------------


async def _call(method: Callable[..., Any], **kwargs: Any) -> Any:
    # works with slack_sdk's WebClient and AsyncWebClient alike
    result = method(**kwargs)
    return await result if inspect.isawaitable(result) else result


class DigestScheduler:
    """One APScheduler cron job per configured digest; each run is posted by exactly one replica."""

    def __init__(self, engine: Engine, config: PromobotConfig, slack_client: Any, instance_id: str,
                 clock: Callable[[], datetime] = utcnow, scheduler: AsyncIOScheduler | None = None):
        self.engine = engine
        self.config = config
        self.client = slack_client
        self.instance_id = instance_id
        self.clock = clock
        self.scheduler = scheduler or AsyncIOScheduler(timezone=timezone.utc)
        self.triggers = [digest_trigger(d) for d in config.digests]

    @staticmethod
    def job_id(index: int, digest: DigestConfig) -> str:
        return f"digest:{index}:{digest.channel}"

    def start(self) -> None:
        """Add the jobs and start the scheduler; call from inside the running event loop."""
        for i, (digest, trigger) in enumerate(zip(self.config.digests, self.triggers)):
            self.scheduler.add_job(self._run, trigger, args=[i], id=self.job_id(i, digest), replace_existing=True,
                                   coalesce=True, max_instances=1,
                                   misfire_grace_time=int(MISFIRE_GRACE.total_seconds()))
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
        run_key = fire_time.astimezone(timezone.utc).isoformat()
        claimed = await asyncio.to_thread(claim_run, self.engine, job=self.job_id(index, digest), run_key=run_key,
                                          instance_id=self.instance_id, now=self.clock())
        if not claimed:
            log.info("digest %s at %s was claimed by another instance", index, run_key)
            return False
        content, png = await asyncio.to_thread(self._render, digest, fire_time)
        await _call(self.client.chat_postMessage, channel=digest.channel, text=digest_text(content),
                    blocks=digest_blocks(content))
        await _call(self.client.files_upload_v2, channel=digest.channel, file=png,
                    filename=f"promotion-digest-{content.local(fire_time, '%Y-%m-%d')}.png",
                    title=f"Promotions per day and time to promote, {content.local(fire_time, '%d %b %Y')}",
                    alt_txt="Bar chart of promotions per day; line of the daily mean time to promote against "
                            "the one-day target")
        return True

    def _render(self, digest: DigestConfig, end: datetime) -> tuple[Digest, bytes]:
        with Session(self.engine) as s:
            content = compute_digest(s, digest=digest, environments=self.config.environment_names, end=end)
        png = digest_chart(content.series, title=f"Promotions per day and time to promote ({digest.timezone})")
        return content, png
