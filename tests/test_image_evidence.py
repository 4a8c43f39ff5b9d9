"""Multi-arch images and reproducible builds: the digest and metadata gates against a real registry.

A multi-arch push leaves an OCI image index under the tag; CI may record the index digest or one
platform manifest. A reproducible build stamps ``org.opencontainers.image.created`` with the commit
time, days before ``built_at``.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.clients.registry import OCI_INDEX, OCI_MANIFEST, OciRegistryClient
from checks.base import GateStatus, ManifestInfo, SourceHostError
from checks.digest_matches import GATE as DIGEST
from checks.metadata_complete import GATE as METADATA
from tests.oci_registry import push_image, put_manifest
from tests.test_registry_gates import BUILT, NAME, SHA, TAG, StaticRegistry, artifact, context, image_config

CREATED = "org.opencontainers.image.created"
COMMITTED = BUILT - timedelta(days=3)  # the commit is three days older than the build


def push_platform(host: str, arch: str) -> tuple[str, int]:
    """One platform's image, pushed under its own tag first (as buildx pushes the parts of an index);
    returns its digest and the size of its manifest."""
    layer = f"{arch} layer".encode()
    config = {**image_config({}, [layer]), "architecture": arch}
    digest = push_image(host, NAME, f"build-{arch}", config=config, layers=[layer])
    request = urllib.request.Request(f"http://{host}/v2/{NAME}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return digest, len(resp.read())


def push_index(host: str, manifests: list[dict], tag: str = TAG) -> str:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
    return put_manifest(host, NAME, tag, body, OCI_INDEX)


def descriptor(digest: str, size: int, arch: str, **extra) -> dict:
    return {
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": size,
        "platform": {"architecture": arch, "os": "linux", **extra},
    }


@pytest.fixture
def multiarch(oci_registry):
    """amd64 and arm64/v8 images under one index at TAG, plus a buildx-style attestation manifest."""
    host = oci_registry.host
    amd64, amd64_size = push_platform(host, "amd64")
    arm64, arm64_size = push_platform(host, "arm64")
    other, _ = push_platform(host, "s390x")  # pushed, but not in the index
    attestation = {
        "mediaType": OCI_MANIFEST,
        "digest": other,
        "size": 1,
        "platform": {"architecture": "unknown", "os": "unknown"},
        "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": amd64},
    }
    index = push_index(
        host, [descriptor(amd64, amd64_size, "amd64"), descriptor(arm64, arm64_size, "arm64", variant="v8")]
    )
    return {
        "host": host,
        "image": f"{host}/{NAME}",
        "index": index,
        "amd64": amd64,
        "arm64": arm64,
        "other": other,
        "attestation": attestation,
        "sizes": (amd64_size, arm64_size),
    }


# --- 4. multi-arch images --------------------------------------------------------------


@pytest.mark.registry
async def test_index_digest_recorded_matches_and_names_the_index(multiarch):
    result = await DIGEST.evaluate(context(multiarch["image"], artifact(multiarch["index"]), OciRegistryClient()))
    assert result.status is GateStatus.PASSED, result.reason
    assert result.evidence["matched"] == "index"
    assert "the image index (linux/amd64, linux/arm64/v8)" in result.reason
    assert [m["platform"] for m in result.evidence["index_manifests"]] == ["linux/amd64", "linux/arm64/v8"]


@pytest.mark.registry
@pytest.mark.parametrize("platform, key", [("linux/amd64", "amd64"), ("linux/arm64/v8", "arm64")])
async def test_platform_manifest_recorded_matches_and_names_the_platform(multiarch, platform, key):
    recorded = multiarch[key]
    result = await DIGEST.evaluate(context(multiarch["image"], artifact(recorded), OciRegistryClient()))
    assert result.status is GateStatus.PASSED, result.reason
    assert result.evidence["matched"] == platform and result.evidence["index_digest"] == multiarch["index"]
    assert f"still lists the build's digest {recorded} as its {platform} manifest" in result.reason
    assert "mutation" not in result.reason


@pytest.mark.registry
async def test_manifest_not_in_the_index_is_a_tag_mutation(multiarch):
    result = await DIGEST.evaluate(context(multiarch["image"], artifact(multiarch["other"]), OciRegistryClient()))
    assert result.status is GateStatus.FAILED
    assert result.reason.startswith(f"tag mutation: {multiarch['image']}:{TAG} now points to the image index")
    assert multiarch["other"] in result.reason and "(linux/amd64, linux/arm64/v8)" in result.reason

    # the index was re-pushed without arm64: the arm64 build no longer matches
    push_index(multiarch["host"], [descriptor(multiarch["amd64"], multiarch["sizes"][0], "amd64")])
    result = await DIGEST.evaluate(context(multiarch["image"], artifact(multiarch["arm64"]), OciRegistryClient()))
    assert result.status is GateStatus.FAILED and "tag mutation" in result.reason and "(linux/amd64)" in result.reason


@pytest.mark.registry
async def test_an_attestation_manifest_is_no_image(multiarch):
    amd64_size, arm64_size = multiarch["sizes"]
    push_index(
        multiarch["host"],
        [
            descriptor(multiarch["amd64"], amd64_size, "amd64"),
            descriptor(multiarch["arm64"], arm64_size, "arm64"),
            multiarch["attestation"],
        ],
    )
    client = OciRegistryClient()
    info = await client.manifest(multiarch["image"], TAG)
    assert [e.attestation for e in info.manifests] == [False, False, True]
    assert info.manifests[2].platform == f"attestation for {multiarch['amd64']}"
    result = await DIGEST.evaluate(context(multiarch["image"], artifact(multiarch["other"]), client))
    assert result.status is GateStatus.FAILED and "is an attestation manifest in the image index" in result.reason
    assert "Record the image index's digest" in result.next_step


# --- 5. reproducible builds ------------------------------------------------------------


class SourceHost:
    """The source host role with a known commit time (the real client is exercised in the scenarios)."""

    def __init__(self, when: datetime | None = COMMITTED, error: str | None = None):
        self.when, self.error, self.asked = when, error, []

    async def commit_reachable(self, repository: str, sha: str, ref: str) -> tuple[bool, str]:
        return True, "reachable"

    async def commit_time(self, repository: str, sha: str) -> datetime | None:
        self.asked.append((repository, sha))
        if self.error:
            raise SourceHostError(self.error)
        return self.when


def created_image(created: str) -> StaticRegistry:
    return StaticRegistry(ManifestInfo("sha256:" + "1" * 64, OCI_MANIFEST, labels={CREATED: created}))


def with_source(ctx, source_host):
    return replace(ctx, source_host=source_host)


@pytest.mark.parametrize(
    "created, status, says",
    [
        # SOURCE_DATE_EPOCH: created is the commit time, three days before the build
        (COMMITTED.isoformat(), "passed", "is between the commit time of 7a3f9c2e1b4d in acme/api-gateway"),
        ("2026-03-01T10:00:00Z", "passed", "and the build time"),  # between commit and build
        (BUILT.isoformat(), "passed", "is between the commit time"),
        # before the commit: this image was not built from this commit
        (
            (COMMITTED - timedelta(hours=1)).isoformat(),
            "failed",
            "is before the commit time of 7a3f9c2e1b4d in acme/api-gateway, 2026-02-27T10:00:00+00:00: "
            "an image cannot be built before its commit",
        ),
        # a pipeline that reports built_at when its job starts: the image is created a little later
        ((BUILT + timedelta(minutes=30)).isoformat(), "passed", "is between the commit time"),
        # long after the recorded build: another build
        ((BUILT + timedelta(hours=2)).isoformat(), "failed", "is more than 1h after the recorded build time"),
    ],
)
async def test_created_between_commit_time_and_build_time(created, status, says):
    source = SourceHost()
    ctx = with_source(context("ghcr.io/acme/api-gateway", artifact(), created_image(created)), source)
    result = await METADATA.evaluate(ctx)
    assert result.status.value == status, result.reason
    assert says in result.reason
    assert source.asked == [("acme/api-gateway", SHA)]
    assert result.evidence["created_earliest"] == COMMITTED.isoformat()
    assert result.evidence["created_earliest_is"] == "the commit time of 7a3f9c2e1b4d in acme/api-gateway"


@pytest.mark.parametrize(
    "source, status, says",
    [
        (None, "failed", "the build time minus 1h, since the commit time is unknown (no GitHub credentials)"),
        (SourceHost(when=None), "failed", "(acme/api-gateway has no commit 7a3f9c2e1b4d)"),
        # GitHub down: a created time before the fallback cannot be judged either way
        (SourceHost(error="GitHub answered 502"), "errored", "GitHub could not give it: GitHub answered 502"),
    ],
)
async def test_without_the_commit_time_the_gate_says_what_it_used(source, status, says):
    ctx = with_source(context("ghcr.io/acme/api-gateway", artifact(), created_image(COMMITTED.isoformat())), source)
    result = await METADATA.evaluate(ctx)
    assert result.status.value == status, result.reason
    assert says in result.reason
    assert result.evidence["created_earliest"] == (BUILT - timedelta(hours=1)).isoformat()
    # within the hour before the build it still passes, and says what it compared against
    ctx = with_source(context("ghcr.io/acme/api-gateway", artifact(), created_image("2026-03-02T09:30:00Z")), source)
    result = await METADATA.evaluate(ctx)
    assert result.status is GateStatus.PASSED and "since the commit time is unknown" in result.reason


@pytest.mark.registry
async def test_reproducible_build_label_on_a_real_registry(oci_registry):
    layer = b"reproducible layer"
    labels = {CREATED: COMMITTED.strftime("%Y-%m-%dT%H:%M:%SZ"), "org.opencontainers.image.revision": SHA}
    push_image(oci_registry.host, NAME, TAG, config=image_config(labels, [layer]), layers=[layer])
    ctx = with_source(context(f"{oci_registry.host}/{NAME}", artifact(), OciRegistryClient()), SourceHost())
    result = await METADATA.evaluate(ctx)
    assert result.status is GateStatus.PASSED, result.reason
    assert "agree with the image's OCI metadata" in result.reason
    assert result.evidence["image_created_label"] == "2026-02-27T10:00:00Z"


async def test_created_is_not_compared_without_built_at_and_commit_time_is_not_asked_without_created():
    source = SourceHost()
    ctx = with_source(context("ghcr.io/acme/api-gateway", artifact(), StaticRegistry(ManifestInfo("d", None))), source)
    result = await METADATA.evaluate(ctx)
    assert result.status is GateStatus.PASSED and source.asked == []
    assert datetime.fromisoformat(result.evidence["built_at"]) == BUILT.astimezone(UTC)
