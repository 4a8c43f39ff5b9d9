"""A real OCI registry for tests: Debian's ``docker-registry`` on a loopback port.

Use the ``oci_registry`` fixture (import it into a conftest or test module), or
call :func:`start_registry` directly. Images are pushed through the
distribution API itself (:func:`push_image`, :func:`put_manifest`), so what the
bot reads back is exactly what a CI push would leave behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import pytest

BINARY = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def require_registry_binary() -> str:
    """The registry binary's path; skips the test without it (fails under PROMOBOT_REQUIRE_SERVICES=1)."""
    path = BINARY if os.access(BINARY, os.X_OK) else shutil.which("docker-registry")
    if not path:
        message = "docker-registry not installed: apt-get install -y docker-registry"
        if os.environ.get("PROMOBOT_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class RegistryProcess:
    """A running registry: ``host`` is ``127.0.0.1:PORT``, ``url`` is ``http://`` + host."""

    host: str
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        """Stop the registry (idempotent); it stops answering at once."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> RegistryProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/", timeout=1) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start_registry(directory: Path, *, timeout: float = 15.0) -> RegistryProcess:
    """Start a registry storing under ``directory``; returns once ``GET /v2/`` answers 200."""
    binary = require_registry_binary()
    directory = Path(directory)
    (directory / "storage").mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # the free port may be taken between probing and binding
        port = _free_port()
        config = directory / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {directory / 'storage'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: {secrets.token_hex(16)}\n",
            encoding="utf-8",
        )
        log_path = directory / "registry.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        reg = RegistryProcess(f"127.0.0.1:{port}", proc, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(reg.url):
                return reg
            time.sleep(0.05)
        reg.stop()
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"docker-registry did not start on 127.0.0.1 (log {log_path}):\n{tail}")


@pytest.fixture
def oci_registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    """A fresh registry per test, stopped at the end."""
    reg = start_registry(tmp_path / "registry")
    try:
        yield reg
    finally:
        reg.stop()


# --- pushing through the distribution API ------------------------------------------


def _call(method: str, url: str, body: bytes | None = None, content_type: str | None = None):
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {url} -> {exc.code}: {exc.read()[:500]!r}") from None


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(host: str, name: str, data: bytes) -> str:
    """Upload one blob (POST an upload, then PUT it whole with its digest); returns the digest."""
    digest = digest_of(data)
    _, headers, _ = _call("POST", f"http://{host}/v2/{name}/blobs/uploads/")
    location = urljoin(f"http://{host}/", headers["Location"])
    sep = "&" if "?" in location else "?"
    _call("PUT", f"{location}{sep}digest={digest}", data, "application/octet-stream")
    return digest


def put_manifest(host: str, name: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST) -> str:
    """PUT manifest bytes under a tag (or digest); returns the digest the registry reports."""
    _, headers, _ = _call("PUT", f"http://{host}/v2/{name}/manifests/{reference}", body, media_type)
    return headers["Docker-Content-Digest"]


def push_image(
    host: str, name: str, tag: str, *, config: dict, layers: list[bytes], annotations: dict[str, str] | None = None
) -> str:
    """Push config, layers and an OCI image manifest under ``tag``; returns the manifest digest."""
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest: dict = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config_bytes), "digest": push_blob(host, name, config_bytes)},
        "layers": [
            {"mediaType": OCI_LAYER, "size": len(layer), "digest": push_blob(host, name, layer)} for layer in layers
        ],
    }
    if annotations:
        manifest["annotations"] = annotations
    body = json.dumps(manifest, indent=2).encode()
    digest = put_manifest(host, name, tag, body)
    assert digest == digest_of(body), "registry digest differs from the pushed bytes"
    return digest


# --- the images scenario tests promote ----------------------------------------------


def canonical_image(service: str, tag: str) -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest) bytes of the image a scenario's build of ``service:tag`` pushes: the same
    bytes every time, so the manifest digest is known before anything is pushed."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Labels": {"org.opencontainers.image.title": service}}},
        sort_keys=True,
    ).encode()
    layer = f"{service} {tag}\n".encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": digest_of(config)},
            "layers": [{"mediaType": OCI_LAYER, "size": len(layer), "digest": digest_of(layer)}],
            "annotations": {"org.opencontainers.image.ref.name": tag},
        },
        indent=2,
    ).encode()
    return config, layer, manifest


def canonical_digest(service: str, tag: str) -> str:
    return digest_of(canonical_image(service, tag)[2])


def push_canonical(host: str, name: str, service: str, tag: str) -> str:
    """Push the canonical image of ``service:tag`` as ``name:tag`` (as a build job would); returns its digest."""
    config, layer, manifest = canonical_image(service, tag)
    push_blob(host, name, config)
    push_blob(host, name, layer)
    return put_manifest(host, name, tag, manifest)
