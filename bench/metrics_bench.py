"""How long one daily digest for 50 services takes over two years of history:
1,000,000 audit events and 100,000 promotions, on SQLite and on PostgreSQL.

    python bench/metrics_bench.py [--skip-postgres] [--verify]

SQLite uses a temporary file; PostgreSQL the server at PROMOBOT_BENCH_POSTGRES_URL
(default postgresql+psycopg://postgres@127.0.0.1:5432/test), in a schema of its own
that is dropped afterwards. The history is bulk-loaded (executemany on SQLite, COPY on
PostgreSQL): 50,000 releases, each an artifact, a dev deployment and verification, an
automatic promotion to staging and a manual one to production (about 4% fail
verification and 2% are rollbacks), and 20 audit events.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import DigestConfig
from handlers.blocks.chart import digest_chart
from storage import audit
from storage.audit import GENESIS, event_hash
from storage.db import create_db_engine, normalise_url
from storage.metrics.digest import compute_digest
from storage.metrics.prometheus import build_registry

SERVICES = [f"service-{i:02d}" for i in range(50)]
RELEASES = 50_000  # two promotions each
EVENTS_PER_RELEASE = 20
END = datetime(2025, 6, 2, 7, 0, tzinfo=UTC)  # Monday 09:00 in Berlin
HISTORY = timedelta(days=730)
ENVIRONMENTS = ["dev", "staging", "production"]
ACTIONS = [
    "artifact.built",
    "scan.finished",
    "sbom.published",
    "deployment.finished",
    "verification.finished",
    "promotion.requested",
    "promotion.approved",
    "dispatch.sent",
    "deployment.finished",
    "verification.finished",
    "promotion.requested",
    "promotion.approval",
    "promotion.approved",
    "dispatch.sent",
    "deployment.finished",
    "verification.finished",
    "check.evaluated",
    "check.evaluated",
    "card.updated",
    "card.updated",
]
# what the metric queries need beyond the existing indexes (proposed for storage/models.py)
INDEXES = {
    "ix_promotion_requested_at": ("promotion", "requested_at"),
    "ix_promotion_completed_at": ("promotion", "completed_at"),
    "ix_promotion_approved_at": ("promotion", "approved_at"),
    "ix_deployment_finished_at": ("deployment", "finished_at"),
    "ix_verification_finished_at": ("verification", "finished_at"),
    "ix_verification_artifact": ("verification", "service, tag, environment"),
}


def history() -> dict[str, Iterator[dict]]:
    """Row generators per table, deterministic, in the columns' Python types."""
    rng = random.Random(42)
    releases = []
    last_tag: dict[str, str] = {}
    for r in range(RELEASES):
        service = SERVICES[r % len(SERVICES)]
        built = END - HISTORY + HISTORY * (r / RELEASES) + timedelta(minutes=rng.randint(0, 600))
        tag = f"{r:07x}{rng.getrandbits(20):05x}"
        rollback = service in last_tag and rng.random() < 0.02
        failed = not rollback and rng.random() < 0.04
        prod_requested = built + timedelta(hours=rng.uniform(1, 30))
        approved = prod_requested + timedelta(minutes=rng.uniform(2, 120))
        releases.append((r, service, tag, built, prod_requested, approved, rollback, failed, last_tag.get(service)))
        last_tag[service] = tag

    def artifacts() -> Iterator[dict]:
        for r, service, tag, built, *_ in releases:
            yield dict(
                id=r + 1,
                service=service,
                tag=tag,
                digest="sha256:" + tag.ljust(64, "0"),
                commit_sha=tag,
                pipeline_run_id=str(r),
                built_at=built,
                recorded_at=built,
                hold_reason=None,
            )

    def promotions() -> Iterator[dict]:
        for r, service, tag, built, requested, approved, rollback, failed, previous in releases:
            staged = built + timedelta(minutes=21)
            yield dict(
                id=f"s-{r}",
                kind="promotion",
                service=service,
                tag=tag,
                digest="sha256:" + tag.ljust(64, "0"),
                source_commit=tag,
                source_environment="dev",
                target_environment="staging",
                status="verified",
                requested_by="promobot",
                requested_at=staged,
                approved_at=staged,
                dispatched_at=staged,
                completed_at=staged + timedelta(minutes=30),
                expires_at=None,
                required_approvals=0,
                reason=None,
                decided_by=None,
                channel="C0DEPLOYS",
                message_ts=None,
                pipeline_run_id=str(r),
                run_url=None,
                gate_report=None,
                replaces_tag=previous,
                version=4,
            )
            kind, promoted = ("rollback", previous) if rollback else ("promotion", tag)
            yield dict(
                id=f"p-{r}",
                kind=kind,
                service=service,
                tag=promoted,
                digest="sha256:" + promoted.ljust(64, "0"),
                source_commit=promoted,
                source_environment=None if rollback else "staging",
                target_environment="production",
                status="failed" if failed else "verified",
                requested_by="U0DEV",
                requested_at=requested,
                approved_at=approved,
                dispatched_at=approved + timedelta(minutes=1),
                completed_at=approved + timedelta(minutes=31),
                expires_at=None,
                required_approvals=1,
                reason="verification failed" if failed else None,
                decided_by=None,
                channel="C0DEPLOYS",
                message_ts=None,
                pipeline_run_id=str(r),
                run_url=None,
                gate_report=None,
                replaces_tag=previous if not rollback else tag,
                version=5,
            )

    def outcomes(table: str) -> Iterator[dict]:
        n = 0
        for r, service, tag, built, _requested, _approved, rollback, failed, previous in releases:
            promoted = previous if rollback else tag
            for env, promotion_id, tag_, at, ok in (
                ("dev", None, tag, built + timedelta(minutes=10), True),
                ("staging", f"s-{r}", tag, built + timedelta(minutes=40), True),
                ("production", f"p-{r}", promoted, approved + timedelta(minutes=21), not failed),
            ):
                n += 1
                common = dict(id=n, service=service, tag=tag_, environment=env, url=None, promotion_id=promotion_id)
                if table == "deployment":
                    yield dict(common, status="success", run_id=str(n), finished_at=at, recorded_at=at)
                else:
                    done = at + timedelta(minutes=10)
                    result = "passed" if ok else "failed"
                    yield dict(common, result=result, checks={"smoke": result}, finished_at=done, recorded_at=done)

    tip = {"seq": 0, "hash": GENESIS}

    def events() -> Iterator[dict]:
        prev, seq = GENESIS, 0
        for r, service, tag, built, _requested, _approved, *_ in releases:
            for i, action in enumerate(ACTIONS):
                seq += 1
                at = built + timedelta(minutes=3 * i)
                row = dict(
                    seq=seq,
                    at=at,
                    actor="promobot",
                    action=action,
                    promotion_id=f"p-{r}" if i > 9 else f"s-{r}",
                    service=service,
                    environment=ENVIRONMENTS[min(i // 7, 2)],
                    detail={"tag": tag},
                    prev_hash=prev,
                )
                prev = row["hash"] = event_hash(**row)
                yield row
        tip.update(seq=seq, hash=prev)

    def head() -> Iterator[dict]:  # read after events() is exhausted
        yield dict(id=1, seq=tip["seq"], last_hash=tip["hash"])

    return {
        "artifact": artifacts(),
        "promotion": promotions(),
        "deployment": outcomes("deployment"),
        "verification": outcomes("verification"),
        "auditevent": events(),
        "audithead": head(),
    }


def _sqlite_value(value: object) -> object:
    if isinstance(value, datetime):  # the format SQLAlchemy's SQLite DateTime stores
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return json.dumps(value) if isinstance(value, dict) else value


def load_sqlite(engine: Engine) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("BEGIN")
        for table, rows in history().items():
            first = next(rows)
            cols = list(first)
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            cur.executemany(sql, ([_sqlite_value(row[c]) for c in cols] for row in _chain(first, rows)))
        cur.execute("COMMIT")
    finally:
        raw.close()


def load_postgres(engine: Engine) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for table, rows in history().items():
            first = next(rows)
            cols = list(first)
            with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in _chain(first, rows):
                    copy.write_row([json.dumps(row[c]) if isinstance(row[c], dict) else row[c] for c in cols])
        raw.commit()
    finally:
        raw.close()


def _chain(first: dict, rest: Iterator[dict]) -> Iterator[dict]:
    yield first
    yield from rest


def prepare(engine: Engine, load: Callable[[Engine], None]) -> float:
    SQLModel.metadata.create_all(engine)
    with engine.begin() as conn:
        for name, (table, cols) in INDEXES.items():
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({cols})")
    started = time.perf_counter()
    load(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def timed(fn: Callable[[], object], runs: int = 5) -> tuple[float, float]:
    """(first run, median of the rest) in seconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times[0], statistics.median(times[1:])


def measure(name: str, engine: Engine, verify: bool) -> dict[str, float]:
    digest = DigestConfig(channel="C0METRICS", schedule="0 9 * * mon-fri", timezone="Europe/Berlin", services=SERVICES)

    def one_digest():
        with Session(engine) as s:
            return compute_digest(s, digest=digest, environments=ENVIRONMENTS, end=END)

    content = one_digest()
    with Session(engine) as s:
        counts = {
            t: s.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("auditevent", "promotion", "deployment", "verification")
        }
    registry = build_registry(engine, max_age=0)  # measure the queries, not the cache
    digest_first, digest_median = timed(one_digest)
    scrape_first, scrape_median = timed(lambda: list(registry.collect()), runs=3)
    chart_first, chart_median = timed(lambda: digest_chart(content.series, title="bench"), runs=3)
    production = next(m for m in content.totals.promotions if m.environment == "production")
    print(
        f"{name}: {counts['auditevent']:,} audit events, {counts['promotion']:,} promotions, "
        f"{counts['deployment']:,} deployments, {counts['verification']:,} verifications"
    )
    print(
        f"  digest for {len(SERVICES)} services (1 day, 14-day chart data): first {digest_first:.3f} s, "
        f"median {digest_median:.3f} s  [production: {production.outcomes} ended, "
        f"success {production.success_rate:.1%}]"
    )
    print(f"  /metrics scrape (all-time aggregates): first {scrape_first:.3f} s, median {scrape_median:.3f} s")
    print(f"  chart PNG render: first {chart_first:.3f} s, median {chart_median:.3f} s")
    if verify:
        started = time.perf_counter()
        with Session(engine) as s:
            problem = audit.verify(s)
        print(f"  audit verify of the whole chain: {time.perf_counter() - started:.1f} s ({problem or 'intact'})")
    return {"digest": digest_median, "scrape": scrape_median}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--verify", action="store_true", help="also time `audit verify` over the million events")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_db_engine(f"sqlite:///{tmp}/bench.db")
        print(f"SQLite: loaded in {prepare(engine, load_sqlite):.1f} s")
        results["SQLite"] = measure("SQLite", engine, args.verify)
        engine.dispose()
    if not args.skip_postgres:
        url = normalise_url(
            os.environ.get("PROMOBOT_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
        )
        schema = f"promobot_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        engine = sa.create_engine(sa.engine.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}))
        try:
            print(f"PostgreSQL: loaded in {prepare(engine, load_postgres):.1f} s")
            results["PostgreSQL"] = measure("PostgreSQL", engine, args.verify)
        finally:
            engine.dispose()
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            admin.dispose()
    print("digest for 50 services: " + ", ".join(f"{k} {v['digest']:.3f} s" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
