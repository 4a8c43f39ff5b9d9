"""The ledger's reads at once give what its reads one at a time give, on any history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.db import create_db_engine, transaction
from storage.ledger import SqlLedger
from storage.migrate import upgrade
from storage.models import Deployment, Verification

ENVIRONMENTS = ["dev", "staging", "production"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)

reports = st.lists(
    st.tuples(
        st.sampled_from(["deployment", "verification"]),
        st.sampled_from(["api-gateway", "billing"]),
        st.sampled_from(ENVIRONMENTS),
        st.sampled_from(["7a3f9c2", "a1b2c3d", "0ddba11"]),
        st.booleans(),  # success / passed
        st.integers(0, 30),  # minutes after T0: ties included
    ),
    max_size=25,
)


@pytest.fixture
def ledger(database_url):
    engine = create_db_engine(database_url)
    upgrade(engine)
    yield SqlLedger(engine)
    engine.dispose()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=reports)
def test_latest_verified_tags_is_latest_verified_tag_of_each_environment(ledger, history):
    with transaction(ledger.engine) as s:
        s.execute(sa.delete(Deployment))
        s.execute(sa.delete(Verification))
        for kind, service, environment, tag, good, minute in history:
            at = T0 + timedelta(minutes=minute)
            row = {"service": service, "tag": tag, "environment": environment, "finished_at": at, "recorded_at": at}
            if kind == "deployment":
                s.add(Deployment(**row, status="success" if good else "failure"))
            else:
                s.add(Verification(**row, result="passed" if good else "failed"))
    for service in ("api-gateway", "billing"):
        one_at_a_time = {e: ledger.latest_verified_tag(service, e) for e in ENVIRONMENTS}
        assert ledger.latest_verified_tags(service, ENVIRONMENTS) == one_at_a_time, history
