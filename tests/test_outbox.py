"""The dispatch outbox's claims: a lost claim never dispatches; a claim survives a long delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from bot.app import build, instance_id
from bot.config import Settings, parse_config
from bot.engine.outbox_queue import LEASE
from storage.db import transaction
from storage.models import Artifact, Deployment, OutboxEntry, Promotion, SbomReport, ScanReport, Verification
from tests.harness import config_on, fixture_json, settings_for
from tests.oci_registry import push_canonical


def _ready(bot, now, registry_host):
    """An artifact pushed, verified in staging two hours ago, scanned, with an SBOM, commit on main."""
    from checks.reports import parse_sbom, parse_scan

    sha = "7a3f9c2" + "0" * 33
    digest = push_canonical(registry_host, "acme/api-gateway", "api-gateway", "7a3f9c2")
    with transaction(bot.engine) as s:
        s.add(
            Artifact(
                service="api-gateway",
                tag="7a3f9c2",
                digest=digest,
                commit_sha=sha,
                pipeline_run_id="1",
                built_at=now - timedelta(hours=5),
                recorded_at=now,
            )
        )
        s.add(
            Deployment(
                service="api-gateway",
                tag="7a3f9c2",
                environment="staging",
                status="success",
                finished_at=now - timedelta(hours=3),
                recorded_at=now - timedelta(hours=3),
            )
        )
        s.add(
            Verification(
                service="api-gateway",
                tag="7a3f9c2",
                environment="staging",
                result="passed",
                checks={},
                finished_at=now - timedelta(hours=2),
                recorded_at=now - timedelta(hours=2),  # soak counts from when promobot recorded it
            )
        )
        s.add(
            ScanReport(
                service="api-gateway",
                tag="7a3f9c2",
                digest=digest,
                scanner="trivy",
                findings=parse_scan("trivy", fixture_json("trivy/trivy-centos-7-low-medium.json")),
                received_at=now,
            )
        )
        s.add(
            SbomReport(
                service="api-gateway",
                tag="7a3f9c2",
                digest=digest,
                format="cyclonedx",
                components=parse_sbom("cyclonedx", fixture_json("sbom/cyclonedx-1.6-licenses-id-expression-name.json")),
                received_at=now,
            )
        )
    return sha


async def test_an_instance_that_lost_its_claim_does_not_dispatch(database_url, slack, github, image_registry):
    settings = settings_for(database_url, slack, github, promobot_instance_id="replica-a")
    bot = build(settings, parse_config(config_on(image_registry.host)))
    now = datetime.now(UTC)
    github.add_commits("acme/api-gateway", "main", [_ready(bot, now, image_registry.host)])
    service = bot.service
    requested = await service.request("U0DEV", "api-gateway", "7a3f9c2", "production")
    assert requested.outcome == "requested"
    assert (await service.record_approval(requested.promotion_id, "U0LEAD")).changed
    assert (await service.complete_approval(requested.promotion_id, "U0LEAD")).changed
    with Session(bot.engine) as s:
        entry_id = s.exec(select(OutboxEntry.id)).one()
    entry = service.outbox.claim(entry_id)
    assert entry is not None and entry.claimed_until >= now + LEASE - timedelta(seconds=5)
    # while this instance was busy, its claim was taken over (say, it stalled past the lease)
    with transaction(bot.engine) as s:
        s.execute(sa.update(OutboxEntry).values(claimed_by="replica-b"))
    await service.outbox.deliver(entry)
    assert github.dispatches() == []
    with Session(bot.engine) as s:
        assert s.get(Promotion, requested.promotion_id).status == "approved"
        assert s.exec(select(OutboxEntry.claimed_by)).one() == "replica-b"
    bot.engine.dispose()


def test_instance_ids_differ_per_process_unless_named():
    assert instance_id(Settings(promobot_instance_id="pod-7")) == "pod-7"
    assert instance_id(Settings(promobot_instance_id=None)).endswith(f"-{__import__('os').getpid()}")
