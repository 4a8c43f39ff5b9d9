"""Issue 12, points 4 and 5 end to end: images pushed to a real registry, the build reported through
the pipeline API, the commit time read from GitHub (the stand-in, through PyGithub), and the
verdicts read back in `/promote … --check`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.harness import CONFIG, TAG, seed
from tests.oci_registry import push_image
from tests.test_evidence_check import check, gate
from tests.test_image_evidence import descriptor, push_index, push_platform
from tests.test_registry_gates import image_config

CREATED = "org.opencontainers.image.created"
REVISION = "org.opencontainers.image.revision"


@pytest.fixture
def config_text(oci_registry):
    """The harness configuration with both services' images on the test registry and the registry
    checks on in production."""
    return CONFIG.replace("registry.example.com", oci_registry.host).replace(
        "    timezone: Europe/Berlin\n    checks: {digest_matches: false}\n", "    timezone: Europe/Berlin\n"
    )


def at_second(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(microsecond=0)


def zulu(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- 4. multi-arch images ---------------------------------------------------------------------


@pytest.mark.registry
async def test_a_recorded_platform_manifest_matches_its_index_and_one_left_out_is_a_mutation(harness, oci_registry):
    h, host = harness, oci_registry.host
    amd64, amd64_size = push_platform(host, "amd64")
    arm64, arm64_size = push_platform(host, "arm64")
    index = push_index(
        host, [descriptor(amd64, amd64_size, "amd64"), descriptor(arm64, arm64_size, "arm64", variant="v8")], tag=TAG
    )
    await seed(h, digest=arm64)  # CI recorded the arm64 manifest, not the index
    line = gate(await check(h), "Digest matches")
    assert line == (
        f":white_check_mark: *Digest matches*: {host}/acme/api-gateway:{TAG} is the image index {index}, which "
        f"still lists the build's digest {arm64} as its linux/arm64/v8 manifest"
    )

    # the tag is re-pushed with an index that no longer holds that manifest
    repushed = push_index(host, [descriptor(amd64, amd64_size, "amd64")], tag=TAG)
    text = await check(h)
    assert "is not eligible" in text
    assert gate(text, "Digest matches") == (
        f":x: *Digest matches*: tag mutation: {host}/acme/api-gateway:{TAG} now points to the image index "
        f"{repushed}, which neither is the build's recorded digest {arm64} nor lists it among its manifests "
        "(linux/amd64)"
    )


# --- 5. reproducible builds -------------------------------------------------------------------


def push_reproducible(host: str, service: str, created: datetime, sha: str) -> str:
    layer = f"{service} reproducible layer".encode()
    labels = {CREATED: zulu(created), REVISION: sha}
    return push_image(host, f"acme/{service}", TAG, config=image_config(labels, [layer]), layers=[layer])


@pytest.mark.registry
async def test_an_image_created_at_the_commit_time_passes_and_one_from_before_the_commit_fails(harness, oci_registry):
    h, host = harness, oci_registry.host
    built_at = at_second(datetime.now(UTC) - timedelta(hours=30))
    committed = built_at - timedelta(days=3)
    sha = (TAG + "0" * 40)[:40]

    # api-gateway: SOURCE_DATE_EPOCH is the commit time, three days before the build
    h.github.add_commits("acme/api-gateway", "main", [sha], dates=[committed])
    digest = push_reproducible(host, "api-gateway", committed, sha)
    await seed(h, digest=digest, built_at=built_at.isoformat())
    line = gate(await check(h), "Metadata complete")
    assert line == (
        f":white_check_mark: *Metadata complete*: commit {sha}, run 4242 and build time are recorded and agree "
        f"with the image's OCI metadata (image label {CREATED}={zulu(committed)} is between the commit time of "
        f"{sha[:12]} in acme/api-gateway and the build time)"
    )

    # billing: the image says it was made a day before the commit it claims to be built from
    h.github.add_commits("acme/billing", "main", [sha], dates=[committed])
    early = committed - timedelta(days=1)
    digest = push_reproducible(host, "billing", early, sha)
    await seed(h, "billing", digest=digest, built_at=built_at.isoformat())
    line = gate(await check(h, "billing"), "Metadata complete")
    assert line.startswith(f":x: *Metadata complete*: metadata of {host}/acme/billing:{TAG} is incomplete or")
    assert (
        f"image label {CREATED}={zulu(early)} is before the commit time of {sha[:12]} in acme/billing, "
        f"{committed.isoformat()}: an image cannot be built before its commit"
    ) in line
