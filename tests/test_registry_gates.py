"""The registry client and the digest/metadata gates, against a real registry and a small fake.

The real ``docker-registry`` covers what registries normally do; the in-test aiohttp
server covers what only some do: no Docker-Content-Digest, refused HEAD, bearer tokens.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import BasicAuth, web

from bot.clients.registry import OCI_INDEX, OCI_MANIFEST, OciRegistryClient, parse_challenge, parse_image
from bot.config import parse_config
from checks.base import GateContext, GateStatus, IndexEntry, ManifestInfo, ManifestNotFound, RegistryError
from checks.digest_matches import GATE as DIGEST
from checks.metadata_complete import GATE as METADATA
from storage.records import ArtifactRecord
from tests.oci_registry import digest_of, push_image, put_manifest

FIXTURES = Path(__file__).parent / "fixtures" / "oci"
SERVICE, NAME = "api-gateway", "acme/api-gateway"
SHA = "7a3f9c2e1b4d5f60718293a4b5c6d7e8f9012345"
TAG = SHA[:10]
BUILT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NOW = BUILT + timedelta(hours=2)


class MemoryLedger:
    """Only what these gates read from the ledger: the recorded artifact."""

    def __init__(self, *artifacts: ArtifactRecord):
        self._artifacts = {(a.service, a.tag): a for a in artifacts}

    def artifact(self, service: str, tag: str) -> ArtifactRecord | None:
        return self._artifacts.get((service, tag))


class StaticRegistry:
    """A Registry that always answers the same manifest (for metadata rules without HTTP)."""

    def __init__(self, info: ManifestInfo):
        self.info = info

    async def manifest(self, image: str, tag: str) -> ManifestInfo:
        return self.info


def artifact(digest: str = "sha256:" + "0" * 64, **overrides) -> ArtifactRecord:
    fields = dict(service=SERVICE, tag=TAG, digest=digest, commit_sha=SHA, pipeline_run_id="8812345", built_at=BUILT)
    return ArtifactRecord(**{**fields, **overrides})


def context(image: str, record: ArtifactRecord | None, registry) -> GateContext:
    config = parse_config(f"""
environments:
  - name: dev
  - name: staging
    approval: manual
    approvers: [U0LEAD]
services:
  {SERVICE}:
    repository: acme/api-gateway
    image: {image}
    workflow: deploy.yml
    channel: C0DEPLOYS
""")
    ledger = MemoryLedger(record) if record else MemoryLedger()
    return GateContext(
        service=SERVICE,
        tag=TAG,
        target_environment="staging",
        source_environment="dev",
        now=NOW,
        config=config,
        ledger=ledger,
        registry=registry,
    )


def image_config(labels: dict[str, str], layers: list[bytes]) -> dict:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(layer) for layer in layers]},
    }


def push(host: str, layer: bytes, labels: dict[str, str] | None = None, annotations=None) -> str:
    return push_image(
        host, NAME, TAG, config=image_config(labels or {}, [layer]), layers=[layer], annotations=annotations
    )


# --- digest gate against the real registry --------------------------------------------


@pytest.mark.registry
async def test_digest_matches_when_registry_serves_the_recorded_digest(oci_registry):
    digest = push(oci_registry.host, b"layer one")
    result = await DIGEST.evaluate(context(f"{oci_registry.host}/{NAME}", artifact(digest), OciRegistryClient()))
    assert result.status is GateStatus.PASSED, result
    assert result.evidence["digest"] == digest
    assert result.evidence["media_type"] == OCI_MANIFEST


@pytest.mark.registry
async def test_repushed_tag_is_a_tag_mutation(oci_registry):
    built = push(oci_registry.host, b"layer one")
    repushed = push(oci_registry.host, b"layer two")
    assert built != repushed
    result = await DIGEST.evaluate(context(f"{oci_registry.host}/{NAME}", artifact(built), OciRegistryClient()))
    assert result.status is GateStatus.FAILED
    assert "tag mutation" in result.reason and built in result.reason and repushed in result.reason
    assert result.evidence["recorded_digest"] == built and result.evidence["registry_digest"] == repushed


@pytest.mark.registry
async def test_unknown_tag_is_a_missing_image(oci_registry):
    push_image(oci_registry.host, NAME, "other", config=image_config({}, [b"x"]), layers=[b"x"])
    client = OciRegistryClient()
    result = await DIGEST.evaluate(context(f"{oci_registry.host}/{NAME}", artifact(), client))
    assert result.status is GateStatus.FAILED and "missing image" in result.reason
    # an unknown repository is missing too, not an error
    result = await DIGEST.evaluate(context(f"{oci_registry.host}/acme/nothing-here", artifact(), client))
    assert result.status is GateStatus.FAILED and "missing image" in result.reason


@pytest.mark.registry
async def test_stopped_registry_errors_could_not_verify(oci_registry):
    digest = push(oci_registry.host, b"layer one")
    oci_registry.stop()
    result = await DIGEST.evaluate(context(f"{oci_registry.host}/{NAME}", artifact(digest), OciRegistryClient()))
    assert result.status is GateStatus.ERRORED
    assert result.reason.startswith("could not verify digest:") and oci_registry.host in result.reason


@pytest.mark.registry
async def test_index_on_real_registry_reports_index_digest_and_annotations(oci_registry):
    child = push(oci_registry.host, b"layer one", labels={"ignored": "for an index"})
    request = urllib.request.Request(
        f"{oci_registry.url}/v2/{NAME}/manifests/{child}", headers={"Accept": OCI_MANIFEST}
    )
    size = len(urllib.request.urlopen(request, timeout=5).read())
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "annotations": {"com.example.key1": "v1"},
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "size": size,
                    "digest": child,
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    digest = put_manifest(oci_registry.host, NAME, TAG, index, OCI_INDEX)
    info = await OciRegistryClient().manifest(f"{oci_registry.host}/{NAME}", TAG)
    assert info == ManifestInfo(
        digest, OCI_INDEX, {"com.example.key1": "v1"}, {}, (IndexEntry(child, OCI_MANIFEST, "linux/amd64"),)
    )


async def test_digest_gate_without_artifact_or_registry():
    result = await DIGEST.evaluate(context("ghcr.io/acme/api-gateway", None, OciRegistryClient()))
    assert result.status is GateStatus.FAILED and result.reason.startswith("no artifact.built recorded for")
    assert "report" in result.next_step.lower()
    result = await DIGEST.evaluate(context("ghcr.io/acme/api-gateway", artifact(), None))
    assert result.status is GateStatus.ERRORED and "no registry client is configured" in result.reason


# --- metadata gate ------------------------------------------------------------------------


@pytest.mark.registry
async def test_metadata_passes_when_labels_agree(oci_registry):
    push(
        oci_registry.host,
        b"layer one",
        labels={
            "org.opencontainers.image.revision": SHA,
            "org.opencontainers.image.created": (BUILT - timedelta(minutes=3)).isoformat(),
        },
        annotations={
            "org.opencontainers.image.revision": SHA[:12],
            "org.opencontainers.image.created": "2026-03-02T10:00:05Z",
        },
    )
    result = await METADATA.evaluate(context(f"{oci_registry.host}/{NAME}", artifact(), OciRegistryClient()))
    assert result.status is GateStatus.PASSED, result
    assert result.evidence["image_revision_label"] == SHA
    assert result.evidence["image_revision_annotation"] == SHA[:12]


@pytest.mark.registry
async def test_metadata_revision_mismatch_fails_with_both_values(oci_registry):
    other = "0123456789abcdef0123456789abcdef01234567"
    push(oci_registry.host, b"layer one", labels={"org.opencontainers.image.revision": other})
    result = await METADATA.evaluate(context(f"{oci_registry.host}/{NAME}", artifact(), OciRegistryClient()))
    assert result.status is GateStatus.FAILED
    assert other in result.reason and SHA in result.reason


@pytest.mark.registry
async def test_metadata_errors_when_registry_is_unreachable(oci_registry):
    oci_registry.stop()
    result = await METADATA.evaluate(context(f"{oci_registry.host}/{NAME}", artifact(), OciRegistryClient()))
    assert result.status is GateStatus.ERRORED and "could not verify" in result.reason


async def test_metadata_lists_every_missing_field_in_one_result():
    record = artifact(commit_sha=None, pipeline_run_id="  ")
    result = await METADATA.evaluate(context("ghcr.io/acme/api-gateway", record, None))
    assert result.status is GateStatus.FAILED
    assert "commit SHA is missing" in result.reason and "pipeline run id is missing" in result.reason
    assert len(result.evidence["problems"]) == 2


async def test_metadata_future_build_bad_sha_and_created_far_from_build():
    record = artifact(commit_sha="not-a-sha", built_at=NOW + timedelta(minutes=10))
    info = ManifestInfo(
        "sha256:" + "1" * 64, OCI_MANIFEST, labels={"org.opencontainers.image.created": "2026-03-01T00:00:00Z"}
    )
    result = await METADATA.evaluate(context("ghcr.io/acme/api-gateway", record, StaticRegistry(info)))
    problems = result.evidence["problems"]
    assert result.status is GateStatus.FAILED and len(problems) == 3, problems
    assert "not 7–40 hex" in problems[0] and "in the future" in problems[1]
    # without a valid commit SHA there is no commit time: the earliest accepted is the build time minus 1h
    assert "2026-03-01T00:00:00Z" in problems[2] and "is before the build time minus 1h" in problems[2]
    assert "commit time is unknown (no valid commit SHA is recorded)" in problems[2]
    # within the 5 minute skew the build time is fine
    record = artifact(built_at=NOW + timedelta(minutes=4))
    result = await METADATA.evaluate(context("ghcr.io/acme/api-gateway", record, None))
    assert result.status is GateStatus.PASSED, result


async def test_metadata_without_artifact_fails():
    result = await METADATA.evaluate(context("ghcr.io/acme/api-gateway", None, None))
    assert result.status is GateStatus.FAILED and "no artifact.built recorded" in result.reason


# --- a registry that omits Docker-Content-Digest and wants a bearer token ------------------


class FakeRegistry:
    """Token-protected registry that never sends Docker-Content-Digest."""

    USER, PASSWORD, TOKEN = "robot$ci", "pa55-W0RD-never-shown", "tok-ZZZ-never-shown"

    def __init__(self) -> None:
        self.host = ""
        self.documents: dict[str, tuple[bytes, str]] = {}  # "manifests/<ref>" or "blobs/<digest>"
        self.head = "omit"  # omit: 200 without the digest header; refuse: 405
        self.accept_tokens = True
        self.status: int | None = None
        self.token_requests: list[tuple[str, list[tuple[str, str]]]] = []
        self.requests: list[tuple[str, str]] = []

    def add(self, kind: str, ref: str, body: bytes, media_type: str) -> None:
        self.documents[f"{kind}/{ref}"] = (body, media_type)

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append((request.headers.get("Authorization", ""), list(request.query.items())))
        if request.headers.get("Authorization") != BasicAuth(self.USER, self.PASSWORD).encode():
            return web.json_response({"details": "bad credentials"}, status=401)
        return web.json_response({"token": self.TOKEN, "expires_in": 300})

    async def v2(self, request: web.Request) -> web.Response:
        name, kind, ref = (request.match_info[k] for k in ("name", "kind", "ref"))
        self.requests.append((request.method, f"{kind}/{ref}"))
        if not (self.accept_tokens and request.headers.get("Authorization") == f"Bearer {self.TOKEN}"):
            challenge = (
                f'Bearer realm="http://{self.host}/token",service="fake-registry",scope="repository:{name}:pull"'
            )
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED"}]}, status=401, headers={"WWW-Authenticate": challenge}
            )
        if self.status:
            return web.Response(status=self.status)
        if request.method == "HEAD" and self.head == "refuse":
            return web.Response(status=405)
        found = self.documents.get(f"{kind}/{ref}")
        if found is None:
            code = "MANIFEST_UNKNOWN" if kind == "manifests" else "BLOB_UNKNOWN"
            return web.json_response({"errors": [{"code": code}]}, status=404)
        return web.Response(body=found[0], headers={"Content-Type": found[1]})


@pytest.fixture
async def fake_registry():
    fake = FakeRegistry()
    app = web.Application()
    app.router.add_get("/token", fake.token)
    app.router.add_route("*", r"/v2/{name:.+}/{kind:manifests|blobs}/{ref}", fake.v2)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.host = f"127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


def serve_image(fake: FakeRegistry, labels: dict[str, str]) -> bytes:
    config = json.dumps({"config": {"Labels": labels}}).encode()
    fake.add("blobs", digest_of(config), config, "application/octet-stream")
    # formatting a re-encoder would not reproduce: the digest must come from these exact bytes
    manifest = (
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "size": len(config),
                    "digest": digest_of(config),
                },
                "layers": [],
            },
            indent=3,
        )
        + "\n\n"
    ).encode()
    fake.add("manifests", TAG, manifest, OCI_MANIFEST)
    return manifest


def client_for(fake: FakeRegistry, password: str = FakeRegistry.PASSWORD, **kwargs) -> OciRegistryClient:
    return OciRegistryClient({fake.host: (FakeRegistry.USER, password)}, **kwargs)


async def test_digest_is_the_hash_of_the_body_when_header_missing_and_token_is_cached(fake_registry):
    body = serve_image(fake_registry, {"org.opencontainers.image.revision": SHA})
    client = client_for(fake_registry)
    image = f"{fake_registry.host}/{NAME}"
    info = await client.manifest(image, TAG)
    assert info.digest == "sha256:" + hashlib.sha256(body).hexdigest()
    assert info.labels == {"org.opencontainers.image.revision": SHA} and info.media_type == OCI_MANIFEST
    assert await client.manifest(image, TAG) == info
    assert len(fake_registry.token_requests) == 1, "the token is cached per (registry, scope)"
    authorization, query = fake_registry.token_requests[0]
    assert authorization == BasicAuth(FakeRegistry.USER, FakeRegistry.PASSWORD).encode()
    assert query == [("service", "fake-registry"), ("scope", f"repository:{NAME}:pull")]
    result = await DIGEST.evaluate(context(image, artifact(info.digest), client))
    assert result.status is GateStatus.PASSED


async def test_expired_token_is_fetched_again(fake_registry):
    serve_image(fake_registry, {})
    now = [1000.0]
    client = client_for(fake_registry, clock=lambda: now[0])
    await client.manifest(f"{fake_registry.host}/{NAME}", TAG)
    now[0] += 299  # expires_in is 300: refreshed ahead of expiry
    await client.manifest(f"{fake_registry.host}/{NAME}", TAG)
    assert len(fake_registry.token_requests) == 2


async def test_refused_head_falls_back_to_get(fake_registry):
    body = serve_image(fake_registry, {})
    fake_registry.head = "refuse"
    info = await client_for(fake_registry).manifest(f"{fake_registry.host}/{NAME}", TAG)
    assert info.digest == digest_of(body)
    assert ("GET", f"manifests/{TAG}") in fake_registry.requests


async def test_credentials_never_appear_in_errors(fake_registry, caplog):
    serve_image(fake_registry, {})
    caplog.set_level("DEBUG")
    with pytest.raises(RegistryError) as refused:
        await client_for(fake_registry, password="wrong-pa55-W0RD").manifest(f"{fake_registry.host}/{NAME}", TAG)
    fake_registry.accept_tokens = False
    with pytest.raises(RegistryError) as after_auth:
        await client_for(fake_registry).manifest(f"{fake_registry.host}/{NAME}", TAG)
    assert "401" in str(refused.value) and "credentials refused" in str(refused.value)
    assert fake_registry.host in str(after_auth.value) and "HTTP 401 after authenticating" in str(after_auth.value)
    client = client_for(fake_registry)
    for text in (str(refused.value), str(after_auth.value), repr(client), caplog.text):
        for secret in ("pa55-W0RD", FakeRegistry.TOKEN, BasicAuth(FakeRegistry.USER, FakeRegistry.PASSWORD).encode()):
            assert secret not in text


async def test_server_errors_and_unknown_tags(fake_registry):
    serve_image(fake_registry, {})
    client = client_for(fake_registry)
    with pytest.raises(ManifestNotFound):
        await client.manifest(f"{fake_registry.host}/{NAME}", "deadbeef00")
    with pytest.raises(ManifestNotFound):
        await client.manifest(f"{fake_registry.host}/{NAME}", "../../etc")
    fake_registry.status = 503
    with pytest.raises(RegistryError, match=rf"registry {fake_registry.host} answered HTTP 503"):
        await client.manifest(f"{fake_registry.host}/{NAME}", TAG)


async def test_oci_index_fixture_gives_index_annotations_only(fake_registry):
    body = (FIXTURES / "oci-image-index.image-spec-example.json").read_bytes()
    fake_registry.add("manifests", TAG, body, OCI_INDEX)
    info = await client_for(fake_registry).manifest(f"{fake_registry.host}/{NAME}", TAG)
    assert info.digest == digest_of(body) and info.media_type == OCI_INDEX and info.labels == {}
    assert info.annotations == {"com.example.key1": "value1", "com.example.key2": "value2"}
    assert [(e.platform, e.digest[:15]) for e in info.manifests] == [
        ("linux/ppc64le", "sha256:e692418e"),
        ("linux/amd64", "sha256:5b0bcabd"),
    ]
    assert not any(path.startswith("blobs/") for _, path in fake_registry.requests)


# --- references, schemes, configuration ---------------------------------------------------


def test_parse_image_and_scheme():
    assert parse_image("docker.io/library/alpine") == parse_image("alpine")
    hub = parse_image("docker.io/alpine")
    assert (hub.registry, hub.api_host, hub.name) == ("docker.io", "registry-1.docker.io", "library/alpine")
    assert parse_image("ghcr.io/acme/x").name == "acme/x"
    assert parse_image("127.0.0.1:5000/acme/api-gateway").api_host == "127.0.0.1:5000"
    assert parse_image("acme/x").registry == "docker.io"
    with pytest.raises(ValueError):
        parse_image("ghcr.io/Acme/X")
    client = OciRegistryClient()
    assert [client.scheme(h) for h in ("127.0.0.1:5000", "localhost", "[::1]:5000", "ghcr.io")] == [
        "http",
        "http",
        "http",
        "https",
    ]
    custom = OciRegistryClient(insecure_registries=["registry.lan:5000"])
    assert custom.scheme("registry.lan:5000") == "http" and custom.scheme("127.0.0.1:5000") == "https"


def test_challenge_parsing():
    kind, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull,push"'
    )
    assert kind == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull,push",
    }


def test_from_env():
    client = OciRegistryClient.from_env(
        {"PROMOBOT_REGISTRY_AUTH": '{"ghcr.io": {"username": "bot", "password": "hunter2"}}'}
    )
    assert client.credential_for(parse_image("ghcr.io/acme/x")) == ("bot", "hunter2")
    assert "hunter2" not in repr(client)
    assert OciRegistryClient.from_env({}).credential_for(parse_image("ghcr.io/acme/x")) is None
    for bad in ('{"ghcr.io": "hunter2"}', "hunter2", '{"ghcr.io": {"username": "bot"}}'):
        with pytest.raises(ValueError) as exc:
            OciRegistryClient.from_env({"PROMOBOT_REGISTRY_AUTH": bad})
        assert "hunter2" not in str(exc.value)
