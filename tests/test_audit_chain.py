"""The audit chain: tampering is named at the first event it touched; export; purge with an anchor;
concurrent writers on PostgreSQL keep the chain linear."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from bot.engine.records import export
from storage import audit, retention
from storage.db import create_db_engine, transaction
from storage.models import Approval, AuditAnchor, AuditEvent, AuditHead, Promotion, Verification
from tests.harness import PostgresSchema, valid_record

T0 = datetime(2023, 1, 2, 9, 0, tzinfo=UTC)


@contextmanager
def postgres_engine() -> Iterator[Engine]:
    """An engine on a fresh schema of the test PostgreSQL with every table created, dropped afterwards.

    Skips when the server is unreachable; fails instead under PROMOBOT_REQUIRE_SERVICES=1. The schema
    travels in ``engine.url``, so a second engine on that URL is a second "replica".
    """
    schema = PostgresSchema()
    engine = create_db_engine(schema.url)
    try:
        SQLModel.metadata.create_all(engine)
        yield engine
    finally:
        engine.dispose()
        schema.drop()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()


def write_events(engine: Engine, count: int, start: datetime = T0, step: timedelta = timedelta(days=1)) -> None:
    with transaction(engine) as s:
        for i in range(count):
            audit.append(
                s,
                at=start + i * step,
                actor=f"U{i % 3}",
                action="promotion.requested",
                promotion_id=f"prm-{i}",
                service="api",
                environment="production",
                detail={"n": i},
            )


def problem(engine: Engine) -> audit.ChainProblem | None:
    with Session(engine) as s:
        return audit.verify(s)


def execute(engine: Engine, statement: sa.Executable) -> None:
    with transaction(engine) as s:
        s.execute(statement)


def swap(engine: Engine, a: int, b: int) -> None:
    """Exchange the positions of two events (seq is the chain's order)."""
    for old, new in ((a, -1), (b, a), (-1, b)):
        execute(engine, sa.update(AuditEvent).where(AuditEvent.seq == old).values(seq=new))


def test_an_untouched_chain_verifies(engine: Engine) -> None:
    assert problem(engine) is None  # empty
    write_events(engine, 6)
    assert problem(engine) is None


@pytest.mark.parametrize(
    "field, value",
    [
        ("actor", "U9"),
        ("action", "promotion.approved"),
        ("detail", {"n": 99}),
        ("at", T0 + timedelta(days=2, seconds=1)),
        ("prev_hash", "f" * 64),
    ],
)
def test_an_edited_field_is_named(engine: Engine, field: str, value: object) -> None:
    write_events(engine, 6)
    execute(engine, sa.update(AuditEvent).where(AuditEvent.seq == 3).values({field: value}))
    found = problem(engine)
    assert found.seq == 3 and "altered" in found.problem, found


def test_an_edit_with_a_recomputed_hash_is_named_at_the_edited_event(engine: Engine) -> None:
    write_events(engine, 6)
    with Session(engine) as s:
        ev = s.get(AuditEvent, 3)
        forged = audit.event_hash(
            seq=3,
            at=ev.at,
            actor="U9",
            action=ev.action,
            promotion_id=ev.promotion_id,
            service=ev.service,
            environment=ev.environment,
            detail=ev.detail,
            prev_hash=ev.prev_hash,
        )
    execute(engine, sa.update(AuditEvent).where(AuditEvent.seq == 3).values(actor="U9", hash=forged))
    found = problem(engine)
    assert found.seq == 3 and "recomputed" in found.problem, found


def test_the_last_event_rehashed_is_caught_by_the_head(engine: Engine) -> None:
    write_events(engine, 4)
    with Session(engine) as s:
        ev = s.get(AuditEvent, 4)
        forged = audit.event_hash(
            seq=4,
            at=ev.at,
            actor="U9",
            action=ev.action,
            promotion_id=ev.promotion_id,
            service=ev.service,
            environment=ev.environment,
            detail=ev.detail,
            prev_hash=ev.prev_hash,
        )
    execute(engine, sa.update(AuditEvent).where(AuditEvent.seq == 4).values(actor="U9", hash=forged))
    assert problem(engine).seq == 4


def test_a_deleted_event_is_named(engine: Engine) -> None:
    write_events(engine, 6)
    execute(engine, sa.delete(AuditEvent).where(AuditEvent.seq == 4))
    found = problem(engine)
    assert found.seq == 4 and "removed" in found.problem, found


def test_the_first_event_deleted_is_named(engine: Engine) -> None:
    write_events(engine, 3)
    execute(engine, sa.delete(AuditEvent).where(AuditEvent.seq == 1))
    assert problem(engine).seq == 1


def test_two_swapped_events_are_named_at_the_first(engine: Engine) -> None:
    write_events(engine, 6)
    swap(engine, 2, 5)
    found = problem(engine)
    assert found.seq == 2 and "moved" in found.problem, found


def test_a_truncated_tail_is_named(engine: Engine) -> None:
    write_events(engine, 6)
    execute(engine, sa.delete(AuditEvent).where(AuditEvent.seq >= 5))
    found = problem(engine)
    assert found.seq == 5 and "truncated" in found.problem, found


def test_an_event_added_behind_the_heads_back_is_named(engine: Engine) -> None:
    write_events(engine, 3)
    with Session(engine) as s:
        last = s.get(AuditEvent, 3)
        at = T0 + timedelta(days=5)
        forged = audit.event_hash(
            seq=4,
            at=at,
            actor="U1",
            action="promotion.approved",
            promotion_id=None,
            service=None,
            environment=None,
            detail={},
            prev_hash=last.hash,
        )
        s.add(
            AuditEvent(
                seq=4, at=at, actor="U1", action="promotion.approved", detail={}, prev_hash=last.hash, hash=forged
            )
        )
        s.commit()
    found = problem(engine)
    assert found.seq == 4 and "head" in found.problem, found


def test_a_missing_head_is_reported(engine: Engine) -> None:
    write_events(engine, 2)
    execute(engine, sa.delete(AuditHead))
    assert "head" in problem(engine).problem


# --- retention -------------------------------------------------------------------------


def test_purge_archives_then_anchors_and_the_rest_still_verifies(engine: Engine, tmp_path: Path) -> None:
    write_events(engine, 10)  # one a day from T0
    archive = tmp_path / "archive" / "audit-2023.jsonl"
    archive.parent.mkdir()
    result = retention.purge(
        engine, older_than=T0 + timedelta(days=4), archive_path=archive, now=T0 + timedelta(days=30)
    )
    assert (result.events, result.first_seq, result.last_seq) == (4, 1, 4)
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4]
    assert lines[-1]["hash"] == result.anchor_hash
    with Session(engine) as s:
        assert [e.seq for e in s.query(AuditEvent).order_by(AuditEvent.seq)] == list(range(5, 12))
        anchor = audit.latest_anchor(s)
        assert (anchor.seq, anchor.hash, anchor.first_seq, anchor.events) == (4, result.anchor_hash, 1, 4)
        assert s.get(AuditEvent, 11).action == "audit.purged"
        assert retention.verify_archive(archive, anchor) is None
        assert retention.anchors(s) == [anchor]
    assert problem(engine) is None
    # a second purge continues from the first anchor, into the same archive
    second = retention.purge(
        engine, older_than=T0 + timedelta(days=6), archive_path=archive, now=T0 + timedelta(days=31)
    )
    assert (second.events, second.first_seq, second.last_seq) == (2, 5, 6)
    assert problem(engine) is None
    with Session(engine) as s:
        first_anchor, second_anchor = retention.anchors(s)
        assert retention.verify_archive(archive, first_anchor) is None
        assert retention.verify_archive(archive, second_anchor) is None


def test_purging_nothing_old_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    write_events(engine, 3)
    result = retention.purge(engine, older_than=T0, archive_path=tmp_path / "a.jsonl")
    assert result.events == 0 and not (tmp_path / "a.jsonl").exists()
    assert retention.purge(engine, older_than=T0, archive_path=tmp_path / "a.jsonl").events == 0
    with Session(engine) as s:
        assert s.query(AuditAnchor).count() == 0


def test_purging_everything_leaves_a_verifiable_chain(engine: Engine, tmp_path: Path) -> None:
    write_events(engine, 3)
    result = retention.purge(engine, older_than=T0 + timedelta(days=365), archive_path=tmp_path / "a.jsonl")
    assert result.events == 3
    assert problem(engine) is None
    write_events(engine, 2, start=T0 + timedelta(days=400))
    assert problem(engine) is None


@pytest.mark.parametrize(
    "now, cutoff",
    [
        # two calendar years, not 730 days (which would give 2023-06-02 across the leap day of 2024)
        (datetime(2025, 6, 1, 12, tzinfo=UTC), datetime(2023, 6, 1, 12, tzinfo=UTC)),
        # from 29 February to a year without one: the earlier day, so nothing goes before it is two years old
        (datetime(2028, 2, 29, 9, tzinfo=UTC), datetime(2026, 2, 28, 9, tzinfo=UTC)),
        # an event of 29 February 2024 is kept through 28 February 2026 and purged from 1 March
        (datetime(2026, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
        (datetime(2026, 2, 28, 23, 59, tzinfo=UTC), datetime(2024, 2, 28, 23, 59, tzinfo=UTC)),
        # the cutoff is read in UTC whatever the clock's zone
        (datetime(2025, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))), datetime(2022, 12, 31, 22, 30, tzinfo=UTC)),
    ],
)
def test_default_retention_is_two_calendar_years(now: datetime, cutoff: datetime) -> None:
    assert retention.retention_cutoff(now) == cutoff


@pytest.mark.parametrize(
    "tamper, seq, words",
    [
        ("edit", 7, "altered"),
        ("delete_first_remaining", 5, "removed"),
        ("delete_anchor", 1, "removed"),
        ("truncate", 9, "truncated"),
        ("swap", 6, "moved"),
    ],
)
def test_tampering_after_a_purge_is_named(engine: Engine, tmp_path: Path, tamper: str, seq: int, words: str) -> None:
    write_events(engine, 10)
    retention.purge(engine, older_than=T0 + timedelta(days=4), archive_path=tmp_path / "a.jsonl")  # leaves 5..11
    if tamper == "edit":
        execute(engine, sa.update(AuditEvent).where(AuditEvent.seq == 7).values(actor="U9"))
    elif tamper == "delete_first_remaining":
        execute(engine, sa.delete(AuditEvent).where(AuditEvent.seq == 5))
    elif tamper == "delete_anchor":
        execute(engine, sa.delete(AuditAnchor))
    elif tamper == "truncate":
        execute(engine, sa.delete(AuditEvent).where(AuditEvent.seq >= 9))
    else:
        swap(engine, 6, 8)
    found = problem(engine)
    assert found is not None and found.seq == seq and words in found.problem, found


def test_an_archive_edited_afterwards_fails_its_check(engine: Engine, tmp_path: Path) -> None:
    write_events(engine, 5)
    archive = tmp_path / "a.jsonl"
    retention.purge(engine, older_than=T0 + timedelta(days=3), archive_path=archive)
    archive.write_text(archive.read_text().replace('"actor": "U1"', '"actor": "U9"'))
    with Session(engine) as s:
        assert retention.verify_archive(archive, audit.latest_anchor(s)).seq == 2


# --- export ------------------------------------------------------------------------------


def add_promotion(s: Session, pid: str, requested_at: datetime) -> None:
    s.add(
        Promotion(
            id=pid,
            service="api",
            tag="3f9c2a1",
            digest="sha256:" + "ab" * 32,
            source_commit="3f9c2a1",
            source_environment="staging",
            target_environment="production",
            status="verified",
            requested_by="U1",
            requested_at=requested_at,
            approved_at=requested_at + timedelta(minutes=5),
            completed_at=requested_at + timedelta(hours=1),
            pipeline_run_id="42",
        )
    )
    s.add(Approval(promotion_id=pid, approver="U2", decision="approve", decided_at=requested_at + timedelta(minutes=5)))
    s.add(
        Verification(
            service="api",
            tag="3f9c2a1",
            environment="production",
            result="passed",
            checks={"smoke": "passed"},
            promotion_id=pid,
            finished_at=requested_at + timedelta(hours=1),
            recorded_at=requested_at + timedelta(hours=1),
        )
    )


OLD, B, A = "prm-000000000a", "prm-000000000b", "prm-000000000c"


def test_export_gives_promotion_records_since_a_time(engine: Engine) -> None:
    with transaction(engine) as s:
        s.add(
            Verification(
                service="api",
                tag="3f9c2a1",
                environment="staging",
                result="passed",
                checks={"e2e": "passed"},
                finished_at=T0 - timedelta(hours=2),
                recorded_at=T0 - timedelta(hours=2),
            )
        )
        add_promotion(s, OLD, T0)
        add_promotion(s, B, T0 + timedelta(days=2))
        add_promotion(s, A, T0 + timedelta(days=3))
    with Session(engine) as s:
        lines = list(export(s, since=T0 + timedelta(days=1), fmt="jsonl"))
        whole = json.loads("".join(export(s, since=None, fmt="json")))
        empty = json.loads("".join(export(s, since=T0 + timedelta(days=9), fmt="json")))
        with pytest.raises(ValueError, match="json or jsonl"):
            list(export(s, fmt="csv"))
    records = [valid_record(json.loads(line)) for line in lines]
    assert [r["promotion_id"] for r in records] == [B, A]
    # the promotion model's record, its field names in its order, then promobot's extras
    assert list(records[0].items()) == [
        ("promotion_id", B),
        ("artifact", {"name": "api", "tag": "3f9c2a1", "digest": "sha256:" + "ab" * 32, "source_commit": "3f9c2a1"}),
        ("source_environment", "staging"),
        ("target_environment", "production"),
        ("promotion_requested_at", "2023-01-04T09:00:00Z"),
        ("promotion_approved_at", "2023-01-04T09:05:00Z"),
        ("promotion_completed_at", "2023-01-04T10:00:00Z"),
        ("approver", "U2"),
        ("pipeline_run_id", "42"),
        ("verification_results", {"staging": "PASSED", "production": "PASSED"}),
        ("status", "SUCCESS"),
        ("kind", "promotion"),
        ("requested_by", "U1"),
        ("approvers", ["U2"]),
        ("run_url", None),
        ("reason", None),
        ("expedited", False),
        ("expedite_reason", None),
        ("rolled_back_by", None),
        ("promobot_status", "verified"),
        (
            "verifications",
            [
                {
                    "environment": "production",
                    "result": "PASSED",
                    "checks": {"smoke": "passed"},
                    "url": None,
                    "finished_at": "2023-01-04T10:00:00Z",
                    "recorded_at": "2023-01-04T10:00:00Z",
                }
            ],
        ),
    ]
    assert [valid_record(r)["promotion_id"] for r in whole] == [OLD, B, A]
    assert empty == []


# --- concurrency ----------------------------------------------------------------------------


def append_concurrently(engine: Engine, writers: int = 2, each: int = 200) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers)

    def write(n: int) -> None:
        try:
            barrier.wait()
            for i in range(each):
                with transaction(engine) as s:
                    audit.append(s, at=datetime.now(UTC), actor=f"writer-{n}", action="test.event", detail={"i": i})
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def assert_linear(engine: Engine, total: int) -> None:
    with Session(engine) as s:
        assert audit.verify(s) is None
        assert [e.seq for e in s.query(AuditEvent).order_by(AuditEvent.seq)] == list(range(1, total + 1))
        assert s.get(AuditHead, 1).seq == total
        assert {e.actor for e in s.query(AuditEvent)} == {"writer-0", "writer-1"}


@pytest.mark.postgres
def test_two_writers_on_postgresql_keep_the_chain_linear() -> None:
    with postgres_engine() as engine:
        append_concurrently(engine)  # the very first appends race to create the head row too
        assert_linear(engine, 400)
        with Session(engine) as s:
            assert audit.verify(s) is None


def test_two_writers_on_sqlite_keep_the_chain_linear(engine: Engine) -> None:
    append_concurrently(engine, each=50)
    assert_linear(engine, 100)


@pytest.mark.postgres
def test_verify_on_postgresql_is_not_fooled_by_appends_while_it_reads() -> None:
    with postgres_engine() as engine:
        write_events(engine, 300)
        stop = threading.Event()

        def keep_appending() -> None:
            while not stop.is_set():
                write_events(engine, 1, start=T0 + timedelta(days=1000))

        writer = threading.Thread(target=keep_appending)
        writer.start()
        try:
            for _ in range(5):
                assert problem(engine) is None
        finally:
            stop.set()
            writer.join()


def test_the_daily_purge_archives_old_events_once_per_day(tmp_path):
    from datetime import datetime, timedelta

    from bot.jobs.retention import purge_once
    from storage import migrate
    from storage.db import create_db_engine, transaction

    engine = create_db_engine(f"sqlite:///{tmp_path / 'p.db'}")
    migrate.upgrade(engine)
    now = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    with transaction(engine) as s:
        for days in (900, 800, 10):
            audit.append(s, at=now - timedelta(days=days), actor="U0DEV", action="promotion.requested")
    result = purge_once(engine, archive_dir=tmp_path / "archive", instance_id="a", now=now)
    assert result.events == 2 and result.archive_path == tmp_path / "archive" / "audit-20261126.jsonl"
    assert len(result.archive_path.read_text().splitlines()) == 2
    assert purge_once(engine, archive_dir=tmp_path / "archive", instance_id="b", now=now) is None
    with Session(engine) as s:
        assert audit.verify(s) is None
        assert [e.action for e in s.exec(select(AuditEvent).order_by(AuditEvent.seq))] == [
            "promotion.requested",
            "audit.purged",
        ]
    engine.dispose()


def rewrite_history(engine: Engine, seq: int, actor: str, key: bytes | None) -> None:
    """What someone with write access to the database can do: edit an event, then recompute its hash, every
    later hash and the head so that every link matches again (with ``key``, only if they have the key)."""
    with transaction(engine) as s:
        events = list(s.exec(select(AuditEvent).where(AuditEvent.seq >= seq).order_by(AuditEvent.seq)))
        prev = events[0].prev_hash
        for ev in events:
            if ev.seq == seq:
                ev.actor = actor
            ev.prev_hash = prev
            ev.hash = audit.event_hash(
                seq=ev.seq,
                at=ev.at,
                actor=ev.actor,
                action=ev.action,
                promotion_id=ev.promotion_id,
                service=ev.service,
                environment=ev.environment,
                detail=ev.detail,
                prev_hash=prev,
                key=key if ev.keyed else None,
            )
            prev = ev.hash
            s.add(ev)
        s.execute(sa.update(AuditHead).where(AuditHead.id == 1).values(last_hash=prev))


def test_a_recomputed_rewrite_goes_unnoticed_without_a_key_and_is_caught_with_one(tmp_path: Path) -> None:
    plain = create_db_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    keyed = create_db_engine(f"sqlite:///{tmp_path / 'keyed.db'}", audit_key=b"s3cret-audit-key")
    for engine in (plain, keyed):
        SQLModel.metadata.create_all(engine)
        write_events(engine, 6)
    # without the key the unkeyed chain can be rewritten consistently: only a published head shows it
    rewrite_history(plain, 3, "U9", key=None)
    assert problem(plain) is None
    # an HMAC chain cannot be recomputed without the key: neither with plain SHA-256 nor with a guessed key
    for guess in (None, b"wrong-key"):
        rewrite_history(keyed, 3, "U9", key=guess)
        found = problem(keyed)
        assert found is not None and found.seq == 3, found
    with Session(keyed) as s:
        assert all(ev.keyed for ev in s.exec(select(AuditEvent)))
    plain.dispose()
    keyed.dispose()


def test_a_chain_keyed_later_verifies_in_both_modes_and_refuses_unkeyed_events_after_the_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mixed.db'}"
    before = create_db_engine(url)
    SQLModel.metadata.create_all(before)
    write_events(before, 3)
    after = create_db_engine(url, audit_key=b"s3cret-audit-key")
    write_events(after, 3, start=T0 + timedelta(days=10))
    mode = audit.ChainMode()
    with Session(after) as s:
        assert audit.verify(s, mode) is None
    assert (mode.unkeyed, mode.keyed, mode.first_keyed) == (3, 3, 4)
    assert str(mode) == "keyed HMAC-SHA256 chain from event 4; the 3 events before it are unkeyed SHA-256"
    # the key is needed to verify the keyed part
    found = problem(before)
    assert found.seq == 4 and "set PROMOBOT_AUDIT_KEY" in found.problem
    # an event appended without the key after the chain was keyed is a forgery
    write_events(before, 1, start=T0 + timedelta(days=20))
    with Session(after) as s:
        found = audit.verify(s)
    assert found.seq == 7 and "written without the audit key" in found.problem
    before.dispose()
    after.dispose()
