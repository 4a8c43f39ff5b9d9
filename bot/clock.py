"""Time as promobot reads and writes it: the clock, and durations in promobot.yml and in messages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

_DURATION = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")


def utcnow() -> datetime:
    """The real clock, aware and in UTC; the engine takes a clock so that tests can set it."""
    return datetime.now(UTC)


def parse_duration(value: Any) -> timedelta:
    """'4h', '90m', '1d 2h', '30s' or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return timedelta(seconds=value)
    if isinstance(value, str) and value.strip():
        m = _DURATION.match(value.lower())
        if m and any(m.groups()):
            d, h, mi, s = (int(x) if x else 0 for x in m.groups())
            return timedelta(days=d, hours=h, minutes=mi, seconds=s)
    raise ValueError(f"not a duration: {value!r} (expected e.g. 4h, 90m, 1d)")


def format_duration(td: timedelta) -> str:
    """A duration as people write it in promobot.yml: ``1d 2h``, ``45m``, ``30s``."""
    total = int(td.total_seconds())
    if total <= 0:
        return "0m"
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    text = " ".join(p for p in parts if p)
    return text or f"{seconds}s"


def format_short(td: timedelta | None) -> str:
    """A duration in one short unit, for tables of figures: 45s, 12m, 3.5h, 2.1d."""
    if td is None:
        return "–"
    s = td.total_seconds()
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def format_when(dt: datetime | None) -> str:
    """An instant in messages: ``2026-11-26 10:15 UTC``."""
    return f"{dt.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if dt else "—"
