"""An OCI registry held in memory, for ``promobot shell --demo``: the demo's build pushes its images here,
and the digest and metadata gates read them back exactly as they read a real registry.

A digest is the SHA-256 of the manifest bytes, as in the OCI distribution spec, so a tag pushed again
with other bytes really moves (``push`` returns the new digest) and the digest gate sees the mutation.
"""

from __future__ import annotations

import hashlib
import json

from checks.base import ManifestInfo, ManifestNotFound

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class InMemoryRegistry:
    """Implements ``checks.base.Registry`` over manifests pushed in this process."""

    def __init__(self) -> None:
        self._tags: dict[tuple[str, str], tuple[str, dict[str, str], dict[str, str]]] = {}

    def push(self, image: str, tag: str, *, annotations: dict[str, str] | None = None) -> str:
        """Store an image manifest under ``image:tag``; returns its digest."""
        notes = {**(annotations or {}), "org.opencontainers.image.ref.name": tag}
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": _digest(b"{}")},
            "layers": [],
            "annotations": notes,
        }
        body = json.dumps(manifest, sort_keys=True).encode()
        digest = _digest(body)
        self._tags[(image, tag)] = (digest, notes, {})
        return digest

    async def manifest(self, image: str, tag: str) -> ManifestInfo:
        try:
            digest, annotations, labels = self._tags[(image, tag)]
        except KeyError:
            raise ManifestNotFound(f"{image}:{tag} was never pushed to the demo registry") from None
        return ManifestInfo(digest, OCI_MANIFEST, dict(annotations), dict(labels))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
