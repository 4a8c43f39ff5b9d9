"""How long one full gate evaluation takes when the evidence sources are slow.

The external evidence sources each answer after LATENCY (default 200 ms): the
registry (digest and metadata gates), GitHub (source commit) and the scan and
SBOM store (vulnerabilities, licenses, SBOM present). Deployment and
verification history comes from a real SQLite ledger. The same gates are
evaluated concurrently by the runner, then one after another, and both
figures are printed. The goal: concurrent ≤ 1.25 × the slowest source.

    python bench/gates_bench.py [--latency 0.2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import parse_config
from checks import runner
from checks.base import GateContext, ManifestInfo
from checks.catalog import gates_for
from checks.reports import parse_sbom, parse_scan
from storage import migrate
from storage.db import create_db_engine, transaction
from storage.ledger import SqlLedger
from storage.models import Artifact, Deployment, SbomReport, ScanReport, Verification

CONFIG = """
environments:
  - name: staging
  - name: production
    approval: manual
    approvers: [U0LEAD]
    soak_time: 1h
policy:
  prohibited_licenses: [AGPL-3.0-only]
services:
  api-gateway:
    repository: acme/api-gateway
    image: registry.example.com/acme/api-gateway
    workflow: deploy.yml
    channel: C0DEPLOYS
"""
TAG, DIGEST, SHA = "7a3f9c2", "sha256:" + "ab" * 32, "7a3f9c2" + "0" * 33


class SlowRegistry:
    def __init__(self, latency: float):
        self.latency = latency

    async def manifest(self, image, tag):
        await asyncio.sleep(self.latency)
        return ManifestInfo(
            DIGEST, "application/vnd.oci.image.manifest.v1+json", labels={"org.opencontainers.image.revision": SHA}
        )


class SlowSourceHost:
    def __init__(self, latency: float):
        self.latency = latency

    async def commit_reachable(self, repository, sha, ref):
        await asyncio.sleep(self.latency)
        return True, f"{sha[:12]} is in {ref}"

    async def commit_time(self, repository, sha):
        await asyncio.sleep(self.latency)
        return None


class SlowReportStore(SqlLedger):
    """The scan and SBOM store answers after ``latency``; history reads go to SQLite as they are."""

    def __init__(self, engine, latency: float):
        super().__init__(engine)
        self.latency = latency

    def latest_scan(self, *args):
        time.sleep(self.latency)  # a blocking client, as a real database driver is
        return super().latest_scan(*args)

    def latest_sbom(self, *args):
        time.sleep(self.latency)
        return super().latest_sbom(*args)


def seed(engine, now: datetime) -> None:
    fixtures = ROOT / "tests" / "fixtures"
    with transaction(engine) as s:
        s.add(
            Artifact(
                service="api-gateway",
                tag=TAG,
                digest=DIGEST,
                commit_sha=SHA,
                pipeline_run_id="1",
                built_at=now - timedelta(hours=5),
                recorded_at=now,
            )
        )
        s.add(
            Deployment(
                service="api-gateway",
                tag=TAG,
                environment="staging",
                status="success",
                finished_at=now - timedelta(hours=3),
                recorded_at=now - timedelta(hours=3),
            )
        )
        s.add(
            Verification(
                service="api-gateway",
                tag=TAG,
                environment="staging",
                result="passed",
                checks={},
                finished_at=now - timedelta(hours=2),
                recorded_at=now - timedelta(hours=2),  # soak counts from when promobot recorded it
            )
        )
        trivy = json.loads((fixtures / "trivy" / "trivy-centos-7-low-medium.json").read_text())
        s.add(
            ScanReport(
                service="api-gateway",
                tag=TAG,
                digest=DIGEST,
                scanner="trivy",
                findings=parse_scan("trivy", trivy),
                received_at=now,
            )
        )
        sbom = json.loads((fixtures / "sbom" / "cyclonedx-1.6-licenses-id-expression-name.json").read_text())
        s.add(
            SbomReport(
                service="api-gateway",
                tag=TAG,
                digest=DIGEST,
                format="cyclonedx",
                components=parse_sbom("cyclonedx", sbom),
                received_at=now,
            )
        )


async def sequential(gates, ctx):
    return [await runner._run_one(g, ctx) for g in gates]


async def main(latency: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_db_engine(f"sqlite:///{tmp}/bench.db")
        migrate.upgrade(engine)
        now = datetime.now(UTC)
        seed(engine, now)
        config = parse_config(CONFIG)
        ctx = GateContext(
            service="api-gateway",
            tag=TAG,
            target_environment="production",
            source_environment="staging",
            now=now,
            config=config,
            ledger=SlowReportStore(engine, latency),
            registry=SlowRegistry(latency),
            source_host=SlowSourceHost(latency),
        )
        gates = gates_for(config, "production")
        await runner.evaluate(gates, ctx)  # warm up imports and connections
        concurrent_times, sequential_times = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            report = await runner.evaluate(gates, ctx)
            concurrent_times.append(time.perf_counter() - t)
            assert report.eligible, [r.to_json() for r in report.blocking]
            t = time.perf_counter()
            await sequential(gates, ctx)
            sequential_times.append(time.perf_counter() - t)
        engine.dispose()
    conc, seq = statistics.median(concurrent_times), statistics.median(sequential_times)
    print(f"gates evaluated: {len(gates)} ({', '.join(g.name for g in gates)})")
    print(f"slowest evidence source: {latency * 1000:.0f} ms (registry, GitHub, scan/SBOM store)")
    print(
        f"concurrent evaluation:  median {conc * 1000:.0f} ms over {rounds} rounds "
        f"= {conc / latency:.2f} x the slowest source (goal <= 1.25)"
    )
    print(f"sequential evaluation:  median {seq * 1000:.0f} ms = {seq / latency:.2f} x the slowest source")
    print("goal met" if conc <= 1.25 * latency else "GOAL MISSED")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.latency, args.rounds))
