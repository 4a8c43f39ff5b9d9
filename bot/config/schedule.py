"""Reading a digest's cron schedule (``0 9 * * mon-fri``) the way the scheduler will run it."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


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


def digest_trigger(schedule: str, timezone: str) -> CronTrigger:
    """The cron ``schedule`` in ``timezone``; raises ValueError naming the problem for a schedule
    APScheduler cannot read."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"schedule {schedule!r}: expected 5 fields (minute hour day month weekday)")
    try:
        return CronTrigger.from_crontab(" ".join(fields[:4] + [_weekdays(fields[4])]), timezone=ZoneInfo(timezone))
    except ValueError as exc:
        raise ValueError(f"schedule {schedule!r}: {exc}") from None
