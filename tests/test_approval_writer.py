"""Approvals and revocations written in batches: each recorded once, applied and counted in the order asked,
audited in one unbroken chain, and never acknowledged before its transaction committed; a batch that fails
is written again one by one."""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.engine.approval_writer import ApprovalWriter
from storage import approval_batch, audit
from storage.db import create_db_engine, transaction
from storage.migrate import upgrade
from storage.models import Approval, AuditEvent, Promotion
from storage.statuses import PromotionStatus as S

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


@pytest.fixture
def db(database_url):
    engine = create_db_engine(database_url)
    upgrade(engine)
    with transaction(engine) as s:
        for pid, status in (("prm-a", S.PENDING_APPROVAL), ("prm-b", S.PENDING_APPROVAL), ("prm-gone", S.CANCELLED)):
            s.add(
                Promotion(
                    id=pid,
                    service="api-gateway",
                    tag="7a3f9c2",
                    digest="sha256:" + "a" * 64,
                    target_environment="production",
                    status=status.value,
                    requested_by="U0DEV",
                    requested_at=NOW,
                    required_approvals=20,
                )
            )
    yield engine
    engine.dispose()


def drop_after_commit(monkeypatch, nth: int = 1) -> list[bool]:
    """The writer's ``nth`` transaction commits, then its connection drops before the server says so."""
    commits: list[bool] = []

    def dropping(real):
        @contextmanager
        def commit_then_drop(self, engine):
            with real(self, engine) as tx:
                yield tx
            commits.append(True)
            if len(commits) == nth:
                raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

        return commit_then_drop

    for kind in (approval_batch.SqliteBatch, approval_batch.PipelinedBatch):
        monkeypatch.setattr(kind, "begin", dropping(kind.begin))
    return commits


def writer_for(db) -> ApprovalWriter:
    return ApprovalWriter(db, lambda pid: f"`{pid}` is cancelled.", lambda pid: f"`{pid}` takes no revokes.")


def promotion(db, pid: str) -> Promotion:
    with Session(db) as s:
        p = s.get(Promotion, pid)
        assert p is not None
        s.expunge(p)
        return p


async def test_concurrent_approvals_are_each_recorded_once_and_counted_in_order(db, caplog):
    writer = writer_for(db)
    asks = [("prm-a", f"U{n:02d}") for n in range(12)] + [("prm-b", f"U{n:02d}") for n in range(8)]
    asks += [("prm-a", "U03"), ("prm-b", "U05")]  # the same approvers again
    asks += [("prm-gone", "U01")]  # a promotion that no longer waits
    answers = await asyncio.gather(*(writer.record(promotion(db, pid), user, NOW) for pid, user in asks))

    recorded = [a for a in answers if a.changed]
    assert len(recorded) == 20
    assert "one by one" not in caplog.text  # written in batches, not after a batch failed
    for pid, approvals in (("prm-a", 12), ("prm-b", 8)):
        counts = sorted(int(a.message.split()[2]) for a in recorded if a.promotion_id == pid)
        assert counts == list(range(1, approvals + 1)), counts  # each count told once, none skipped
    refusals = [a.message for a in answers if not a.changed]
    assert refusals.count("You have already approved this promotion.") == 2
    assert "`prm-gone` is cancelled." in refusals

    with Session(db) as s:
        rows = s.exec(select(Approval.promotion_id, Approval.approver)).all()
        assert len(rows) == len(set(rows)) == 20
        events = s.exec(select(AuditEvent).where(col(AuditEvent.action) == "promotion.approval")).all()
        assert sorted((e.promotion_id, e.actor) for e in events) == sorted(rows)
        # the events of one promotion carry its running count, in the order of the chain
        for pid in ("prm-a", "prm-b"):
            ours = sorted((e for e in events if e.promotion_id == pid), key=lambda e: e.seq)
            assert [e.detail["approvals"] for e in ours] == list(range(1, len(ours) + 1))
        assert audit.verify(s) is None


async def test_a_batch_that_fails_is_written_again_one_by_one(db, monkeypatch, caplog):
    """One approval whose audit event cannot be written fails alone; the others of its batch are recorded."""
    real = audit.chained
    queued = threading.Event()

    def refuse_u13(events, **kwargs):
        queued.wait(5)  # the first batch waits until every approval is asked: U13 shares a batch
        if any(e["actor"] == "U13" for e in events):
            raise sa.exc.OperationalError("INSERT", {}, Exception("disk full"))
        return real(events, **kwargs)

    monkeypatch.setattr(approval_batch.audit, "chained", refuse_u13)
    writer = writer_for(db)
    asks = [asyncio.ensure_future(writer.record(promotion(db, "prm-a"), f"U{n:02d}", NOW)) for n in range(10, 16)]
    await asyncio.sleep(0.1)
    queued.set()
    answers = await asyncio.gather(*asks, return_exceptions=True)

    assert "writing them one by one" in caplog.text
    failed = [a for a in answers if isinstance(a, BaseException)]
    assert len(failed) == 1 and "disk full" in str(failed[0])
    assert sum(1 for a in answers if not isinstance(a, BaseException) and a.changed) == 5
    with Session(db) as s:
        approvers = set(s.exec(select(Approval.approver).where(col(Approval.promotion_id) == "prm-a")).all())
        assert approvers == {"U10", "U11", "U12", "U14", "U15"}  # U13's approval was rolled back with its event
        assert audit.verify(s) is None


async def test_a_batch_the_database_refuses_is_rolled_back_and_leaves_its_connection_usable(db, monkeypatch, caplog):
    """The database itself refuses one approval's audit event (a seq already taken): its batch is rolled back
    and written again one by one, the others are recorded, and the connections it used go back to the pool
    as they came (a unit of work on them afterwards still rolls back on error)."""
    real = audit.chained
    queued = threading.Event()

    def taken_seq_for_u13(events, **kwargs):
        queued.wait(5)
        rows = real(events, **kwargs)
        for row in rows:
            if row["actor"] == "U13":
                row["seq"] = 1  # the first approval's event has it
        return rows

    monkeypatch.setattr(approval_batch.audit, "chained", taken_seq_for_u13)
    writer = writer_for(db)
    first = await writer.record(promotion(db, "prm-b"), "U09", NOW)
    assert first.changed
    asks = [asyncio.ensure_future(writer.record(promotion(db, "prm-a"), f"U{n:02d}", NOW)) for n in range(10, 16)]
    await asyncio.sleep(0.1)
    queued.set()
    answers = await asyncio.gather(*asks, return_exceptions=True)

    assert "writing them one by one" in caplog.text
    failed = [a for a in answers if isinstance(a, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], sa.exc.IntegrityError | psycopg.errors.UniqueViolation)
    assert sum(1 for a in answers if not isinstance(a, BaseException) and a.changed) == 5
    with Session(db) as s:
        approvers = set(s.exec(select(Approval.approver).where(col(Approval.promotion_id) == "prm-a")).all())
        assert approvers == {"U10", "U11", "U12", "U14", "U15"}
        assert audit.verify(s) is None
    for _ in range(3):  # each pooled connection: in a transaction again, not left in autocommit
        with pytest.raises(RuntimeError), transaction(db) as s:
            s.execute(sa.update(Promotion).where(col(Promotion.id) == "prm-gone").values(status="approved"))
            raise RuntimeError("rolled back")
    assert promotion(db, "prm-gone").status == S.CANCELLED.value


async def test_a_commit_that_went_through_before_the_connection_dropped_is_not_a_second_click(db, monkeypatch):
    """The server committed the batch, then the connection dropped before it said so: written again one by
    one, each approval finds its own row and is answered as recorded, not as "already approved"."""
    dropped = drop_after_commit(monkeypatch)
    writer = writer_for(db)
    answers = await asyncio.gather(*(writer.record(promotion(db, "prm-a"), f"U{n:02d}", NOW) for n in range(3)))

    assert dropped
    assert all(a.changed and a.message.startswith("Approval recorded:") for a in answers), answers
    with Session(db) as s:
        assert len(s.exec(select(Approval).where(col(Approval.promotion_id) == "prm-a")).all()) == 3
        events = s.exec(select(AuditEvent).where(col(AuditEvent.action) == "promotion.approval")).all()
        assert len(events) == 3  # written once, in the commit that went through
        assert audit.verify(s) is None


async def test_approvals_and_revokes_in_one_batch_are_applied_in_the_order_asked(db, monkeypatch, caplog):
    real = audit.chained
    queued = threading.Event()
    batches: list[list[tuple[str, str]]] = []

    def hold_the_first(events, **kwargs):
        queued.wait(5)  # the first batch waits until every ask is queued: the rest make one batch
        batches.append([(e["actor"], e["action"]) for e in events])
        return real(events, **kwargs)

    monkeypatch.setattr(approval_batch.audit, "chained", hold_the_first)
    writer = writer_for(db)
    a, gone = promotion(db, "prm-a"), promotion(db, "prm-gone")
    asks = [
        writer.record(promotion(db, "prm-b"), "U99", NOW),  # the first batch, alone
        writer.record(a, "U01", NOW),
        writer.record(a, "U02", NOW),
        writer.revoke(a, "U01", NOW),  # revoked in the batch that recorded it
        writer.revoke(a, "U03", NOW),  # never approved
        writer.record(a, "U01", NOW),  # and given again
        writer.revoke(a, "U01", NOW),
        writer.record(a, "U01", NOW),
        writer.revoke(a, "U02", NOW),
        writer.revoke(gone, "U01", NOW),  # no longer waiting
    ]
    futures = [asyncio.ensure_future(ask) for ask in asks]
    await asyncio.sleep(0.1)
    queued.set()
    answers = [(a.changed, a.message) for a in await asyncio.gather(*futures)]

    assert answers == [
        (True, "Approval recorded: 1 of 20."),
        (True, "Approval recorded: 1 of 20."),
        (True, "Approval recorded: 2 of 20."),
        (True, "Your approval of `prm-a` is revoked: 1 of 20."),
        (False, "You have not approved `prm-a`, so there is nothing to revoke."),
        (True, "Approval recorded: 2 of 20."),
        (True, "Your approval of `prm-a` is revoked: 1 of 20."),
        (True, "Approval recorded: 2 of 20."),
        (True, "Your approval of `prm-a` is revoked: 1 of 20."),
        (False, "`prm-gone` takes no revokes."),
    ]
    assert len(batches) == 2 and len(batches[1]) == 7  # the approvals and revokes of prm-a in one transaction
    assert "one by one" not in caplog.text
    with Session(db) as s:
        assert s.exec(select(Approval.approver).where(col(Approval.promotion_id) == "prm-a")).all() == ["U01"]
        events = s.exec(
            select(AuditEvent).where(col(AuditEvent.promotion_id) == "prm-a").order_by(col(AuditEvent.seq))
        ).all()
        assert [(e.actor, e.action.split(".")[1], e.detail["approvals"]) for e in events] == [
            ("U01", "approval", 1),
            ("U02", "approval", 2),
            ("U01", "approval_revoked", 1),
            ("U01", "approval", 2),
            ("U01", "approval_revoked", 1),
            ("U01", "approval", 2),
            ("U02", "approval_revoked", 1),
        ]
        assert audit.verify(s) is None


async def test_a_revoke_whose_commit_went_through_before_the_connection_dropped_is_answered_as_revoked(db, monkeypatch):
    """Written again after an ambiguous commit, a revoke finds its own audited revocation: revoked, not
    "you have not approved"."""
    writer = writer_for(db)
    a = promotion(db, "prm-a")
    await asyncio.gather(*(writer.record(a, f"U{n:02d}", NOW) for n in range(3)))
    dropped = drop_after_commit(monkeypatch)
    later = NOW.replace(minute=5)
    answers = await asyncio.gather(writer.revoke(a, "U00", later), writer.revoke(a, "U01", later))

    assert dropped
    assert all(r.changed and "is revoked" in r.message for r in answers), answers
    with Session(db) as s:
        approvers = s.exec(select(Approval.approver).where(col(Approval.promotion_id) == "prm-a")).all()
        assert approvers == ["U02"]
        revoked = s.exec(select(AuditEvent).where(col(AuditEvent.action) == "promotion.approval_revoked")).all()
        assert sorted(e.actor for e in revoked) == ["U00", "U01"]  # written once, in the commit that went through
        assert audit.verify(s) is None


async def test_an_approval_and_its_revoke_whose_commit_went_through_are_not_applied_again(db, monkeypatch):
    """Written again one by one after an ambiguous commit, the approval must not be inserted a second time
    (it would count, and could approve the promotion, though its approver took it back) nor the revoke
    applied twice: each ask finds its own audited event and is answered from it."""
    real = audit.chained
    queued = threading.Event()

    def hold_the_first(events, **kwargs):
        queued.wait(5)
        return real(events, **kwargs)

    monkeypatch.setattr(approval_batch.audit, "chained", hold_the_first)
    commits = drop_after_commit(monkeypatch, nth=2)
    writer = writer_for(db)
    a = promotion(db, "prm-a")
    later = NOW.replace(minute=1)
    asks = [
        writer.record(promotion(db, "prm-b"), "U99", NOW),  # the first batch, alone
        writer.record(a, "U01", NOW),  # the second batch: its commit goes through, then the connection drops
        writer.revoke(a, "U01", later),
    ]
    futures = [asyncio.ensure_future(ask) for ask in asks]
    await asyncio.sleep(0.1)
    queued.set()
    answers = [(r.changed, r.message) for r in await asyncio.gather(*futures)]

    assert len(commits) >= 2  # the second batch's commit went through, then dropped
    assert answers[1:] == [
        (True, "Approval recorded: 1 of 20."),
        (True, "Your approval of `prm-a` is revoked: 0 of 20."),
    ]
    with Session(db) as s:
        assert s.exec(select(Approval).where(col(Approval.promotion_id) == "prm-a")).all() == []
        events = s.exec(select(AuditEvent.action).where(col(AuditEvent.promotion_id) == "prm-a")).all()
        assert sorted(events) == ["promotion.approval", "promotion.approval_revoked"]  # once each
        assert audit.verify(s) is None


async def test_approvals_and_revokes_on_a_keyed_chain_are_keyed_and_verify_only_with_the_key(db, database_url):
    """With PROMOBOT_AUDIT_KEY the writer's events are HMACs like every other event: the chain verifies with
    the key, and its events do not pass as plain SHA-256 ones."""
    keyed = create_db_engine(database_url, audit_key=b"s3cret-audit-key")
    writer = writer_for(keyed)
    a = promotion(keyed, "prm-a")
    answers = await asyncio.gather(*(writer.record(a, f"U{n:02d}", NOW) for n in range(5)))
    revoked = await writer.revoke(a, "U02", NOW.replace(minute=1))
    assert all(r.changed for r in answers) and revoked.changed
    with Session(keyed) as s:
        events = s.exec(select(AuditEvent).where(col(AuditEvent.promotion_id) == "prm-a")).all()
        assert len(events) == 6 and all(e.keyed for e in events)
        assert audit.verify(s) is None
    with Session(db) as s:  # the same rows, read without the key
        found = audit.verify(s)
        assert found is not None and "PROMOBOT_AUDIT_KEY" in found.problem
    keyed.dispose()
