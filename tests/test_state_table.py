"""The promotion state table, walked: every allowed move happens once with its audit event, every other
move raises, and a move from a status the promotion has left changes nothing."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select

from bot.engine.states import TRANSITIONS, can_move
from bot.engine.transitions import IllegalTransition, move
from storage import migrate
from storage.db import create_db_engine, transaction
from storage.models import AuditEvent, Promotion
from storage.statuses import TERMINAL, PromotionStatus

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ALL_PAIRS = list(itertools.product(PromotionStatus, PromotionStatus))


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    engine = create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('states') / 'states.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def promotion_in(db, status: PromotionStatus, pid: str) -> Promotion:
    p = Promotion(
        id=pid,
        service="api-gateway",
        tag="7a3f9c2",
        digest="sha256:" + "ab" * 32,
        target_environment="production",
        status=status.value,
        requested_by="U0DEV",
        requested_at=NOW,
    )
    with transaction(db) as s:
        s.add(p)
    return p


def audit_of(db, pid: str) -> list[str]:
    with Session(db) as s:
        return [e.action for e in s.exec(select(AuditEvent).where(AuditEvent.promotion_id == pid))]


def test_terminal_states_have_no_way_out_and_every_other_state_has_one():
    for status in PromotionStatus:
        assert bool(TRANSITIONS.get(status)) == (status not in TERMINAL), status


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=[f"{a.value}->{b.value}" for a, b in ALL_PAIRS])
def test_each_pair_of_states(db, source: PromotionStatus, target: PromotionStatus):
    pid = f"prm-{source.value[:5]}{target.value[:5]}"
    p = promotion_in(db, source, pid)
    with transaction(db) as s:
        if not can_move(source, target):
            with pytest.raises(IllegalTransition, match=f"{source.value} → {target.value}"):
                move(s, p, source, target, at=NOW, actor="U0TEST", action="test.moved")
        else:
            assert move(s, p, source, target, at=NOW, actor="U0TEST", action="test.moved", reason="walked")
            # the same move again finds the promotion no longer in ``source``: nothing happens
            assert not move(s, p, source, target, at=NOW, actor="U0TEST", action="test.moved")
    with Session(db) as s:
        row = s.get(Promotion, pid)
        assert row is not None
        if can_move(source, target):
            assert (row.status, row.reason, row.version) == (target.value, "walked", 2)
            assert audit_of(db, pid) == ["test.moved"]
        else:
            assert (row.status, row.version) == (source.value, 1)
            assert audit_of(db, pid) == []
