"""Audit retention: purge old events to an archive file and anchor the chain where they were cut.

The purge writes what it removes first (JSON lines with every field and hash,
fsynced), then deletes those events and records an ``AuditAnchor`` (the last
purged event's seq and hash) in the same transaction, and chains an
``audit.purged`` event. ``storage.audit.verify`` then checks the remaining
chain from the anchor, and ``verify_archive`` checks an archive against it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from storage import audit
from storage.db import rowcount, transaction
from storage.models import AuditAnchor, AuditEvent, AuditHead

RETENTION_YEARS = 2  # the promotion model keeps the audit trail two years: calendar years, not 730 days


@dataclass(frozen=True)
class PurgeResult:
    events: int  # how many events were archived and removed (0: nothing was old enough)
    first_seq: int | None
    last_seq: int | None
    anchor_hash: str | None  # the hash the remaining chain now starts from
    archive_path: Path


def years_before(moment: datetime, years: int) -> datetime:
    """The same date and time ``years`` calendar years earlier. 29 February in a year without one becomes
    28 February, the earlier day, so nothing is ever purged before it is ``years`` full years old."""
    try:
        return moment.replace(year=moment.year - years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year - years, day=28)


def retention_cutoff(now: datetime, years: int = RETENTION_YEARS) -> datetime:
    """Events before this instant are due for purging: ``years`` calendar years before ``now`` (in UTC)."""
    return years_before(now.astimezone(UTC), years)


def _line(ev: sa.Row) -> str:
    return (
        json.dumps(
            {
                "seq": ev.seq,
                "at": ev.at.astimezone(UTC).isoformat(timespec="microseconds"),
                "actor": ev.actor,
                "action": ev.action,
                "promotion_id": ev.promotion_id,
                "service": ev.service,
                "environment": ev.environment,
                "detail": ev.detail or {},
                "prev_hash": ev.prev_hash,
                "keyed": bool(getattr(ev, "keyed", False)),
                "hash": ev.hash,
            },
            sort_keys=True,
        )
        + "\n"
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def purge(
    engine: Engine, *, older_than: datetime, archive_path: Path, actor: str = "promobot", now: datetime | None = None
) -> PurgeResult:
    """Archive, then delete, the oldest events up to the first one at or after ``older_than``.

    Events are appended to ``archive_path`` (created if missing, never overwritten) and fsynced
    before anything is deleted; if the transaction then fails, a rerun archives the same events
    again, identical lines that ``read_archive`` folds together.
    """
    archive_path = Path(archive_path)
    now = now or datetime.now(UTC)
    with transaction(engine) as s:
        # the head row's lock keeps appenders and other purges out while the chain is cut
        if rowcount(s.execute(sa.update(AuditHead).where(col(AuditHead.id) == 1).values(seq=col(AuditHead.seq)))) == 0:
            return PurgeResult(0, None, None, None, archive_path)
        anchor = audit.latest_anchor(s)
        after = anchor.seq if anchor else 0
        kept = s.exec(
            select(sa.func.min(col(AuditEvent.seq))).where(
                col(AuditEvent.seq) > after, col(AuditEvent.at) >= older_than
            )
        ).one()
        last_seq = kept - 1 if kept is not None else s.get(AuditHead, 1).seq
        if last_seq <= after:
            return PurgeResult(0, None, None, None, archive_path)
        doomed = (col(AuditEvent.seq) > after) & (col(AuditEvent.seq) <= last_seq)
        first = last = None
        count = 0
        with archive_path.open("a", encoding="utf-8") as out:
            for ev in s.execute(
                sa.select(sa.inspect(AuditEvent).local_table).where(doomed).order_by(col(AuditEvent.seq))
            ).yield_per(2000):
                out.write(_line(ev))
                first, last, count = first or ev, ev, count + 1
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(archive_path.resolve().parent)
        if first is None or last is None:  # the head said there were events to purge; none were read
            raise RuntimeError(f"audit purge found no events up to {last_seq}")
        s.execute(sa.delete(AuditEvent).where(doomed).execution_options(synchronize_session=False))
        s.add(
            AuditAnchor(
                seq=last.seq,
                hash=last.hash,
                first_seq=first.seq,
                first_prev_hash=first.prev_hash,
                events=count,
                archive=str(archive_path),
                purged_at=now,
            )
        )
        audit.append(
            s,
            at=now,
            actor=actor,
            action="audit.purged",
            detail={
                "events": count,
                "first_seq": first.seq,
                "last_seq": last.seq,
                "anchor_hash": last.hash,
                "older_than": older_than.isoformat(),
                "archive": str(archive_path),
            },
        )
        return PurgeResult(count, first.seq, last.seq, last.hash, archive_path)


def read_archive(path: Path) -> Iterator[AuditEvent]:
    """The events in an archive file, in order; a line repeated by a retried purge is read once."""
    seen = 0
    with Path(path).open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row["seq"] <= seen:
                continue
            seen = row["seq"]
            yield AuditEvent(**{**row, "at": datetime.fromisoformat(row["at"])})


def verify_archive(path: Path, anchor: AuditAnchor, key: bytes | None = None) -> audit.ChainProblem | None:
    """Check that the archive holds exactly the intact chain that ``anchor``'s purge removed (keyed events
    with ``key``)."""
    events = (ev for ev in read_archive(path) if anchor.first_seq <= ev.seq <= anchor.seq)
    end = AuditHead(id=1, seq=anchor.seq, last_hash=anchor.hash)
    return audit.verify_events(events, head=end, anchor=anchor.first_prev_hash, first_seq=anchor.first_seq, key=key)


def anchors(session: Session) -> list[AuditAnchor]:
    """Every purge so far, oldest first (to check each archive with ``verify_archive``)."""
    return list(session.exec(select(AuditAnchor).order_by(col(AuditAnchor.seq))))
