"""Every metric against a small hand-built history, on SQLite and PostgreSQL; the expected numbers
are worked out by hand in the comments."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from storage import metrics
from storage.db import create_db_engine, transaction
from storage.metrics import ALL, Durations
from storage.metrics.prometheus import build_registry
from storage.metrics.table import format_table
from storage.models import Artifact, Deployment, Promotion, Verification
from tests.test_audit_chain import postgres_engine

H, M, S = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)
START = datetime(2025, 6, 2, tzinfo=UTC)  # a Monday
END = START + timedelta(days=7)


def at(day: int, hh: int, mm: int = 0) -> datetime:
    """June ``day`` 2025, hh:mm UTC."""
    return datetime(2025, 6, day, hh, mm, tzinfo=UTC)


class History:
    def __init__(self, session: Session):
        self.s = session

    def artifact(self, service: str, tag: str, built_at: datetime) -> None:
        self.s.add(
            Artifact(
                service=service,
                tag=tag,
                digest=f"sha256:{tag:0<64}",
                commit_sha=tag,
                built_at=built_at,
                recorded_at=built_at,
            )
        )

    def verification(
        self, service: str, env: str, tag: str, result: str, when: datetime, promotion_id: str | None = None
    ) -> None:
        self.s.add(
            Verification(
                service=service,
                environment=env,
                tag=tag,
                result=result,
                checks={},
                promotion_id=promotion_id,
                finished_at=when,
                recorded_at=when,
            )
        )

    def deployment(
        self, service: str, env: str, tag: str, status: str, when: datetime, promotion_id: str | None = None
    ) -> None:
        self.s.add(
            Deployment(
                service=service,
                environment=env,
                tag=tag,
                status=status,
                promotion_id=promotion_id,
                finished_at=when,
                recorded_at=when,
            )
        )

    def promotion(
        self,
        pid: str,
        service: str,
        tag: str,
        source: str | None,
        target: str,
        status: str,
        requested: datetime,
        approved: datetime | None = None,
        *,
        kind: str = "promotion",
        approvals: int = 1,
        deployed: datetime | None = None,
        verified: datetime | None = None,
        deploy_failed: datetime | None = None,
        verify_failed: datetime | None = None,
        replaces: str | None = None,
    ) -> None:
        """A promotion and the deployment/verification rows its outcome implies."""
        dispatched = approved + M if approved and (deployed or deploy_failed) else None
        completed = verified or verify_failed or deploy_failed
        self.s.add(
            Promotion(
                id=pid,
                kind=kind,
                service=service,
                tag=tag,
                digest=f"sha256:{tag:0<64}",
                source_environment=source,
                target_environment=target,
                status=status,
                requested_by="U0REQ",
                requested_at=requested,
                approved_at=approved,
                dispatched_at=dispatched,
                completed_at=completed if status in ("verified", "failed") else None,
                required_approvals=approvals,
                replaces_tag=replaces,
            )
        )
        if deployed:
            self.deployment(service, target, tag, "success", deployed, pid)
        if deploy_failed:
            self.deployment(service, target, tag, "failure", deploy_failed, pid)
        if verified:
            self.verification(service, target, tag, "passed", verified, pid)
        if verify_failed:
            self.verification(service, target, tag, "failed", verify_failed, pid)


def build(engine: Engine) -> None:
    with transaction(engine) as s:
        h = History(s)
        # api: before the window (P0), then four promotions to production and one rollback
        h.artifact("api", "a0", at(18, 12) - timedelta(days=30))
        h.verification("api", "staging", "a0", "passed", at(19, 12) - timedelta(days=30))
        h.promotion(
            "P0",
            "api",
            "a0",
            "staging",
            "production",
            "verified",
            at(20, 9) - timedelta(days=30),
            at(20, 9, 15) - timedelta(days=30),
            deployed=at(20, 12) - timedelta(days=30),
            verified=at(20, 12, 10) - timedelta(days=30),
        )
        h.artifact("api", "a1", at(1, 10))
        h.verification("api", "staging", "a1", "passed", at(2, 8))  # first pass: time to promote starts here
        h.verification("api", "staging", "a1", "passed", at(2, 12))
        h.promotion(
            "P1",
            "api",
            "a1",
            "staging",
            "production",
            "verified",
            at(2, 9),
            at(2, 9, 30),
            deployed=at(2, 10),
            verified=at(2, 10, 20),
        )
        h.artifact("api", "a2", at(3, 6))
        h.verification("api", "staging", "a2", "passed", at(3, 8))
        h.promotion(
            "P2",
            "api",
            "a2",
            "staging",
            "production",
            "verified",
            at(3, 9),
            at(3, 11),
            deployed=at(3, 11, 30),
            verified=at(3, 11, 45),
        )
        h.verification("api", "production", "a2", "failed", at(3, 13))  # incident 1 starts
        h.promotion(
            "R1",
            "api",
            "a1",
            None,
            "production",
            "verified",
            at(3, 14),
            at(3, 14, 10),
            kind="rollback",
            replaces="a2",
            deployed=at(3, 14, 30),
            verified=at(3, 14, 40),
        )  # restores it
        h.promotion("P6", "api", "a2", "staging", "production", "rejected", at(4, 9))
        h.artifact("api", "a3", at(4, 0))
        h.verification("api", "staging", "a3", "passed", at(5, 0))
        h.promotion(
            "P3", "api", "a3", "staging", "production", "failed", at(5, 9), at(5, 9, 20), deploy_failed=at(5, 9, 40)
        )  # incident 2 starts
        h.artifact("api", "a4", at(5, 12))
        h.verification("api", "staging", "a4", "passed", at(6, 0))
        h.promotion(
            "P4",
            "api",
            "a4",
            "staging",
            "production",
            "verified",
            at(8, 20),
            at(8, 20, 5),
            deployed=at(8, 22),
            verified=at(8, 22, 30),
        )  # restores incident 2
        h.promotion("P5", "api", "a4", "staging", "production", "pending_approval", at(8, 23))
        h.artifact("api", "a5", at(8, 6))
        h.verification("api", "staging", "a5", "passed", at(8, 12))
        # requested in the window, but approved exactly at its end and deployed after it
        h.promotion(
            "P7",
            "api",
            "a5",
            "staging",
            "production",
            "verified",
            at(8, 23, 50),
            at(9, 0),
            deployed=at(9, 0, 5),
            verified=at(9, 0, 10),
        )
        # web: an automatic promotion to staging, then a production promotion whose verification fails
        h.artifact("web", "b1", at(4, 8))
        h.verification("web", "dev", "b1", "passed", at(4, 9))
        h.promotion(
            "W1",
            "web",
            "b1",
            "dev",
            "staging",
            "verified",
            at(4, 10),
            at(4, 10),
            approvals=0,
            deployed=at(4, 10, 30),
            verified=at(4, 10, 45),
        )
        h.promotion(
            "W2",
            "web",
            "b1",
            "staging",
            "production",
            "failed",
            at(4, 12),
            at(4, 14),
            deployed=at(4, 14, 30),
            verify_failed=at(4, 15),
        )  # an incident still open


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'metrics.db'}")
        SQLModel.metadata.create_all(engine)
        build(engine)
        yield engine
        engine.dispose()
    else:
        with postgres_engine() as engine:
            build(engine)
            yield engine


def report(engine: Engine, start: datetime = START, end: datetime = END, **kw) -> metrics.MetricsReport:
    with Session(engine) as s:
        return metrics.compute(s, start=start, end=end, **kw)


def by_key(items: list) -> dict[tuple[str, str], object]:
    return {(m.service, m.environment): m for m in items}


def seconds(*values: float) -> list[timedelta]:
    return [timedelta(seconds=v) for v in values]


def test_promotion_metrics_per_service_and_environment(engine: Engine) -> None:
    m = by_key(report(engine).promotions)
    assert set(m) == {("api", "production"), ("web", "staging"), ("web", "production")}
    api = m[("api", "production")]
    # verified in the window: P1, P2, P4 (P7 ends after it, P0 before it); the window is one week
    assert (api.completed, api.per_week) == (3, 3.0)
    # ended in the window: P1, P2, P3, P4; P3 failed, P2's next change was the rollback R1
    assert (api.outcomes, api.rolled_back, api.success_rate) == (4, 2, 0.5)
    # staging first pass → production deployment: P1 10:00-08:00, P2 11:30-08:00, P4 8th 22:00 - 6th 00:00
    # sorted 7200, 12600, 252000: median rank ceil(1.5)=2, p90 rank ceil(2.7)=3
    assert api.time_to_promote == Durations(3, *seconds(90600, 12600, 252000))
    # approved in the window (P7 at its end is out): P4 5m, R1 10m, P3 20m, P1 30m, P2 2h
    # median rank ceil(2.5)=3 → 20m; p90 rank ceil(4.5)=5 → 2h; mean 11100/5
    assert api.approval == Durations(5, *seconds(2220, 1200, 7200))
    assert [(t.metric, t.value, t.met) for t in api.targets()] == [
        ("promotion frequency", "3.0/week", True),
        ("success rate", "50.0%", False),
        ("time to promote", "3.5h", True),
        ("approval duration", "20m", True),
    ]

    staging = m[("web", "staging")]
    assert (staging.completed, staging.outcomes, staging.rolled_back, staging.success_rate) == (1, 1, 0, 1.0)
    assert staging.time_to_promote == Durations(1, *seconds(5400, 5400, 5400))  # dev 09:00 → staging 10:30
    assert staging.approval == Durations()  # automatic: nobody had to approve
    assert [t.met for t in staging.targets()] == [True, True, True, None]

    web = m[("web", "production")]
    assert (web.completed, web.outcomes, web.rolled_back, web.success_rate) == (0, 1, 1, 0.0)
    assert web.time_to_promote == Durations(1, *seconds(13500, 13500, 13500))  # staging 10:45 → 14:30
    assert web.approval == Durations(1, *seconds(7200, 7200, 7200))
    assert [t.met for t in web.targets()] == [False, False, True, False]


def test_dora_metrics_for_production(engine: Engine) -> None:
    d = by_key(report(engine).dora)
    assert set(d) == {("api", "production"), ("web", "production")}
    api = d[("api", "production")]
    assert (api.deployments, api.per_week) == (4, 4.0)  # P1, P2, R1, P4 (P3's deploy failed)
    # build → production deployment, rollbacks excluded: P2 5.5h, P1 24h, P4 3d10h
    assert api.lead_time == Durations(3, *seconds(133800, 86400, 295200))
    assert (api.changes, api.failed_changes, api.change_failure_rate) == (4, 2, 0.5)
    # incidents: failed verification 3rd 13:00 → R1 verified 14:40; failed deploy 5th 09:40 → P4 verified 8th 22:30
    assert api.incidents == 2 and api.open_incidents == 0
    assert api.time_to_restore == Durations(2, *seconds(155700, 6000, 305400))

    web = d[("web", "production")]
    assert (web.deployments, web.changes, web.failed_changes, web.change_failure_rate) == (1, 1, 1, 1.0)
    assert web.lead_time == Durations(1, *seconds(23400, 23400, 23400))  # built 08:00 → deployed 14:30
    assert (web.incidents, web.open_incidents, web.time_to_restore) == (1, 1, Durations())


def test_totals_across_services(engine: Engine) -> None:
    result = report(engine, per_service=False)
    m = by_key(result.promotions)
    assert set(m) == {(ALL, "production"), (ALL, "staging")}
    prod = m[(ALL, "production")]
    assert (prod.completed, prod.outcomes, prod.rolled_back, prod.success_rate) == (3, 5, 3, 0.4)
    # 7200, 12600, 13500, 252000: median rank 2, p90 rank ceil(3.6)=4
    assert prod.time_to_promote == Durations(4, *seconds(71325, 12600, 252000))
    # 300, 600, 1200, 1800, 7200, 7200: median rank 3, p90 rank ceil(5.4)=6
    assert prod.approval == Durations(6, *seconds(3050, 1200, 7200))
    dora = by_key(result.dora)[(ALL, "production")]
    assert (dora.deployments, dora.changes, dora.failed_changes, dora.incidents, dora.open_incidents) == (5, 5, 3, 3, 1)


def test_a_short_window_counts_frequency_over_the_last_week(engine: Engine) -> None:
    api = by_key(report(engine, start=at(8, 0), end=END).promotions)[("api", "production")]
    assert (api.weeks, api.completed, api.per_week) == (1.0, 3, 3.0)
    assert (api.outcomes, api.rolled_back) == (1, 0)  # only P4 ended on the 8th


def test_a_rollback_after_the_window_does_not_count_in_it(engine: Engine) -> None:
    api = by_key(report(engine, start=at(3, 0), end=at(3, 12)).promotions)[("api", "production")]
    assert (api.outcomes, api.rolled_back) == (1, 0)  # P2 verified 11:45; R1 requested 14:00


def test_services_filter(engine: Engine) -> None:
    result = report(engine, services=["web"])
    assert {m.service for m in result.promotions} == {"web"} and {d.service for d in result.dora} == {"web"}


def test_format_table(engine: Engine) -> None:
    lines = format_table(report(engine)).splitlines()
    assert lines[1].split() == [
        "service",
        "environment",
        "promotions/week",
        "success",
        "rate",
        "time",
        "to",
        "promote",
        "approval",
        "duration",
        "expedited",
    ]
    assert lines[2].split() == [
        "api",
        "production",
        "3.0/week",
        "✓",
        "50.0%",
        "✗",
        "missed",
        "3.5h",
        "✓",
        "20m",
        "✓",
        "0",
        "of",
        "4",
    ]
    assert lines[4].split() == ["web", "staging", "1.0/week", "✓", "100.0%", "✓", "1.5h", "✓", "–", "0", "of", "1"]
    assert lines[-1].split() == ["web", "production", "1.0", "6.5h", "(p90", "6.5h,", "n=1)", "100.0%", "1", "open"]
    totals = format_table(report(engine, per_service=False))
    assert "all services  production" in totals


def test_digest_listings(engine: Engine) -> None:
    with Session(engine) as s:
        slow = metrics.slowest_approvals(s, start=START, end=END, limit=3)
        failed = metrics.failed_verifications(s, start=START, end=END)
        rollbacks = metrics.rollbacks(s, start=START, end=END)
        series = metrics.daily_series(s, start=START, end=END, utc_offset=timedelta(hours=2))
    assert [(a.promotion_id, a.duration) for a in slow] == [("P2", 2 * H), ("W2", 2 * H), ("P1", 30 * M)]
    assert failed.total == 2
    assert [(v.service, v.tag, v.finished_at) for v in failed.items] == [
        ("web", "b1", at(4, 15)),
        ("api", "a2", at(3, 13)),
    ]
    assert rollbacks.total == 1
    assert [(r.promotion_id, r.tag, r.replaces_tag, r.status) for r in rollbacks.items] == [
        ("R1", "a1", "a2", "verified")
    ]
    # local days at UTC+2: P4 verified 8th 22:30 UTC is the 9th locally, deployed 22:00 UTC too
    assert [(p.day, p.promotions, p.time_to_promote) for p in series] == [
        (date(2025, 6, 2), 1, 2 * H),
        (date(2025, 6, 3), 1, 3.5 * H),
        (date(2025, 6, 4), 1, 13500 * S),
        (date(2025, 6, 5), 0, None),
        (date(2025, 6, 6), 0, None),
        (date(2025, 6, 7), 0, None),
        (date(2025, 6, 8), 0, None),
        (date(2025, 6, 9), 1, 70 * H),
    ]


def test_prometheus_registry_queries_at_scrape_time(engine: Engine) -> None:
    registry = build_registry(engine, max_age=0)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}

    def value(family: str, sample: str, **labels: str) -> float:
        return next(s.value for s in families[family].samples if s.name == sample and s.labels == labels)

    api_prod = {"service": "api", "environment": "production"}
    assert (
        value("promobot_promotions", "promobot_promotions_total", **api_prod, kind="promotion", status="verified") == 5
    )  # P0 P1 P2 P4 P7
    assert (
        value("promobot_promotions", "promobot_promotions_total", **api_prod, kind="promotion", status="rejected") == 1
    )
    assert (
        value(
            "promobot_promotions_in_progress",
            "promobot_promotions_in_progress",
            **api_prod,
            kind="promotion",
            status="pending_approval",
        )
        == 1
    )
    # all-time approvals: P0 15m, P1 30m, P2 2h, R1 10m, P3 20m, P4 5m, P7 10m
    hist = "promobot_approval_duration_seconds"
    assert value(hist, hist + "_count", **api_prod) == 7
    assert value(hist, hist + "_sum", **api_prod) == 12600
    assert value(hist, hist + "_bucket", **api_prod, le="900.0") == 4
    assert value(hist, hist + "_bucket", **api_prod, le="+Inf") == 7
    ttp = "promobot_time_to_promote_seconds"
    assert value(ttp, ttp + "_count", **api_prod) == 5  # P0 P1 P2 P4 P7
    # a new promotion shows at the next scrape
    with transaction(engine) as s:
        History(s).promotion("P8", "api", "a5", "staging", "production", "rejected", at(10, 9))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert (
        value("promobot_promotions", "promobot_promotions_total", **api_prod, kind="promotion", status="rejected") == 2
    )
