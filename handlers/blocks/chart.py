"""The digest's chart: promotions per day above, time to promote per day below, as a PNG.

matplotlib's object API with the Agg canvas: no pyplot global state, so charts can be rendered
from worker threads, and matplotlib is imported only when a chart is drawn.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from datetime import timedelta

from bot.clock import format_duration
from storage.metrics.report import TIME_TO_PROMOTE_TARGET, DayPoint

GREEN, BLUE, RED = "#2eb67d", "#1264a3", "#e01e5a"


def digest_chart(points: Sequence[DayPoint], *, title: str, target: timedelta = TIME_TO_PROMOTE_TARGET) -> bytes:
    """A 900×520 PNG: bars of promotions verified per day, and the day's mean time to promote against
    the target (days without a production deployment are left blank)."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (matplotlib loads only when a chart is drawn)
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    fig = Figure(figsize=(9, 5.2), dpi=100)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    x = range(len(points))
    bars = top.bar(x, [p.promotions for p in points], color=GREEN)
    top.bar_label(bars, labels=[str(p.promotions) if p.promotions else "" for p in points], fontsize=8)
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_ylabel("promotions")
    top.set_title(title, fontsize=11)
    hours = [p.time_to_promote.total_seconds() / 3600 if p.time_to_promote else math.nan for p in points]
    bottom.plot(x, hours, marker="o", color=BLUE, label="time to promote (mean)")
    bottom.axhline(
        target.total_seconds() / 3600,
        linestyle="--",
        color=RED,
        linewidth=1,
        label=f"target (< {format_duration(target)})",
    )
    bottom.set_ylabel("hours")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left", fontsize=8, frameon=False)
    bottom.set_xticks(list(x), [f"{p.day:%a}\n{p.day:%d %b}" for p in points], fontsize=7)
    for ax in (top, bottom):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
