"""The OCI distribution API client behind ``checks.base.Registry``.

It answers one question, "what does image:tag point at right now", with the
manifest digest plus the metadata the gates compare (manifest annotations and
the image config's labels) and, when the tag points to an image index (a
multi-arch image), the platform manifests the index lists. It speaks the token flow that Docker Hub, GHCR,
GitLab, Harbor and ``docker-registry`` use, and keeps credentials out of logs,
exceptions and ``repr``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from checks.base import IndexEntry, ManifestInfo, ManifestNotFound, RegistryError

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}
IMAGE_CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
MAX_DOCUMENT = 4 * 1024 * 1024  # the distribution spec's manifest size limit; configs are far smaller
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]{32,}")
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))')


@dataclass(frozen=True)
class ImageRef:
    """An image without tag: ``registry`` as people write it, ``api_host`` where the API answers."""

    registry: str
    api_host: str
    name: str


def parse_image(image: str) -> ImageRef:
    """Split ``host[:port]/path`` (Docker Hub short forms included); ValueError if it is no image name."""
    first, _, rest = image.strip().partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        host, name = _norm_host(first), rest
    else:
        host, name = "docker.io", image.strip()
    if host == "docker.io" and "/" not in name:
        name = f"library/{name}"
    if not _NAME.fullmatch(name):
        raise ValueError(f"not an image repository name: {image!r} (expected e.g. ghcr.io/acme/api)")
    return ImageRef(host, "registry-1.docker.io" if host == "docker.io" else host, name)


def _norm_host(host: str) -> str:
    host = host.strip().lower()
    host = host.split("://", 1)[-1].split("/", 1)[0]  # tolerate "https://ghcr.io/" in credentials
    return "docker.io" if host in DOCKER_HUB else host


def _hostname(hostport: str) -> str:
    return urlsplit(f"//{hostport}").hostname or hostport


def _digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_codes(body: bytes) -> str:
    """The distribution API's error codes from a response body, e.g. ' (MANIFEST_UNKNOWN)'."""
    try:
        codes = [e["code"] for e in json.loads(body)["errors"] if isinstance(e.get("code"), str)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""
    return f" ({', '.join(codes)})" if codes else ""


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def index_entries(doc: dict) -> tuple[IndexEntry, ...]:
    """The manifests an image index lists, each with its platform (``linux/arm64/v8``); buildx's
    attestation manifests (``vnd.docker.reference.type: attestation-manifest``) are marked."""
    entries = []
    for d in doc.get("manifests") or []:
        if not isinstance(d, dict) or not isinstance(d.get("digest"), str):
            continue
        platform_doc = d.get("platform")
        p: dict[str, Any] = platform_doc if isinstance(platform_doc, dict) else {}
        parts = [str(p.get(k)) for k in ("os", "architecture", "variant") if p.get(k)]
        annotations = _strings(d.get("annotations"))
        attestation = annotations.get("vnd.docker.reference.type") == "attestation-manifest"
        platform = "/".join(parts) or ("index" if d.get("mediaType") in INDEX_TYPES else "no platform")
        if attestation:
            platform = f"attestation for {annotations.get('vnd.docker.reference.digest', 'an image')}"
        entries.append(IndexEntry(d["digest"], d.get("mediaType"), platform, attestation))
    return tuple(entries)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="…"`` → ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _CHALLENGE_PARAM.finditer(rest)}


class OciRegistryClient:
    """Reads manifests over the OCI distribution API (implements ``checks.base.Registry``).

    ``credentials`` maps a registry host (``ghcr.io``, ``docker.io``, ``host:port``) to
    ``(username, password)``; they are only ever sent to that registry's token service or,
    for basic-auth registries, to the registry itself. Loopback hosts use ``http://`` and all
    others ``https://``; an explicit ``insecure_registries`` replaces that rule with exactly the
    hosts (``host`` or ``host:port``) that use ``http://``.
    """

    def __init__(
        self,
        credentials: Mapping[str, tuple[str, str]] | None = None,
        *,
        insecure_registries: Collection[str] | None = None,
        timeout: float = 8.0,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._credentials = {_norm_host(h): (u, p) for h, (u, p) in (credentials or {}).items()}
        self._insecure = None if insecure_registries is None else {h.lower() for h in insecure_registries}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._clock = clock
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}  # (api host, scope) → (token, expiry)
        self._basic_hosts: set[str] = set()
        # what a sha256 digest names never changes (content addressing): a manifest read and verified once
        # is kept, and a later check asks only which digest the tag names now (one HEAD)
        self._by_digest: OrderedDict[tuple[str, str, str], ManifestInfo] = OrderedDict()
        self._keeping = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> OciRegistryClient:
        """A client whose credentials come from ``PROMOBOT_REGISTRY_AUTH``:
        JSON ``{"ghcr.io": {"username": "…", "password": "…"}}``; ValueError (without the secret) if malformed."""
        raw = (os.environ if environ is None else environ).get("PROMOBOT_REGISTRY_AUTH", "").strip()
        credentials: dict[str, tuple[str, str]] = {}
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise ValueError(
                    "PROMOBOT_REGISTRY_AUTH is not a JSON object like "
                    '{"ghcr.io": {"username": "...", "password": "..."}}'
                )
            for host, entry in data.items():
                if not (
                    isinstance(entry, dict)
                    and isinstance(entry.get("username"), str)
                    and isinstance(entry.get("password"), str)
                ):
                    raise ValueError(f"PROMOBOT_REGISTRY_AUTH: {host!r} needs string username and password")
                credentials[host] = (entry["username"], entry["password"])
        return cls(credentials, **kwargs)

    def __repr__(self) -> str:
        return f"OciRegistryClient(credentials for {sorted(self._credentials) or 'no registry'})"

    def scheme(self, host: str) -> str:
        """``http`` or ``https`` for a registry ``host[:port]``."""
        host = host.lower()
        if self._insecure is None:
            return "http" if _hostname(host) in LOOPBACK else "https"
        return "http" if host in self._insecure or _hostname(host) in self._insecure else "https"

    async def manifest(self, image: str, tag: str) -> ManifestInfo:
        """What ``image:tag`` points at now: digest, media type, annotations and (for an image
        manifest) the config's labels, or (for an image index) the manifests it lists. Raises ManifestNotFound when the registry says the
        repository or tag does not exist, RegistryError (naming the registry and the HTTP status)
        when it cannot be asked."""
        try:
            ref = parse_image(image)
        except ValueError as exc:
            raise RegistryError(str(exc)) from None
        if not (_TAG.fullmatch(tag) or _DIGEST.fullmatch(tag)):
            raise ManifestNotFound(f"{image}:{tag} cannot exist: {tag!r} is not a valid tag")
        session_cm = (
            contextlib.nullcontext(self._session)
            if self._session is not None
            else aiohttp.ClientSession(timeout=self._timeout)
        )
        async with session_cm as session:
            return await self._manifest(session, ref, tag)

    async def _manifest(self, session: aiohttp.ClientSession, ref: ImageRef, tag: str) -> ManifestInfo:
        what = f"manifest {ref.name}:{tag}"
        accept = ", ".join(MANIFEST_TYPES)
        status, headers, _ = await self._call(session, ref, "HEAD", f"manifests/{tag}", accept)
        digest = headers.get("Docker-Content-Digest") if status == 200 else None
        if status in (401, 403, 404, 429) or status >= 500:
            self._raise_for(ref, status, b"", what)
        known = self._known(ref, digest)
        if known is not None:
            return known
        # read by digest when known, so annotations and labels belong to exactly that digest
        status, headers, body = await self._call(session, ref, "GET", f"manifests/{digest or tag}", accept)
        if status != 200:
            self._raise_for(ref, status, body, what)
        if digest is None:
            digest = _digest_of(body)  # no Docker-Content-Digest: the digest is the hash of the exact bytes
        elif digest.startswith("sha256:") and digest != _digest_of(body):
            raise RegistryError(
                f"registry {ref.registry} served {what} whose sha256 does not match its digest {digest}"
            )
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise RegistryError(f"registry {ref.registry} served {what} that is not a JSON manifest")
        content_type = headers.get("Content-Type", "").split(";")[0].strip()
        media_type = doc.get("mediaType") or (content_type if content_type in MANIFEST_TYPES else None)
        labels: dict[str, str] = {}
        config = doc.get("config")
        if (
            media_type not in INDEX_TYPES
            and "manifests" not in doc
            and isinstance(config, dict)
            and config.get("mediaType") in IMAGE_CONFIG_TYPES
            and isinstance(config.get("digest"), str)
        ):
            labels = await self._labels(session, ref, config["digest"], what)
        is_index = media_type in INDEX_TYPES or isinstance(doc.get("manifests"), list)
        info = ManifestInfo(
            digest=digest,
            media_type=media_type,
            annotations=_strings(doc.get("annotations")),
            labels=labels,
            manifests=index_entries(doc) if is_index else (),
        )
        if digest.startswith("sha256:"):  # verified against the bytes above
            self._keep(ref, info)
        return info

    def _known(self, ref: ImageRef, digest: str | None) -> ManifestInfo | None:
        if not digest or not digest.startswith("sha256:"):
            return None
        with self._keeping:
            info = self._by_digest.get((ref.api_host, ref.name, digest))
            if info is not None:
                self._by_digest.move_to_end((ref.api_host, ref.name, digest))
            return info

    def _keep(self, ref: ImageRef, info: ManifestInfo, size: int = 256) -> None:
        with self._keeping:
            self._by_digest[(ref.api_host, ref.name, info.digest)] = info
            while len(self._by_digest) > size:
                self._by_digest.popitem(last=False)

    async def _labels(self, session: aiohttp.ClientSession, ref: ImageRef, digest: str, what: str) -> dict[str, str]:
        status, _, body = await self._call(session, ref, "GET", f"blobs/{digest}", "*/*")
        if status != 200:  # a manifest whose config is gone is a broken registry, not a missing image
            raise RegistryError(
                f"registry {ref.registry} answered HTTP {status} for the config blob "
                f"{digest} of {what}{_error_codes(body)}"
            )
        if digest.startswith("sha256:") and _digest_of(body) != digest:
            raise RegistryError(f"registry {ref.registry} served a config blob that does not match {digest}")
        try:
            config = json.loads(body)
        except ValueError:
            return {}
        return _strings((config.get("config") or {}).get("Labels")) if isinstance(config, dict) else {}

    def _raise_for(self, ref: ImageRef, status: int, body: bytes, what: str) -> None:
        if status == 404:
            raise ManifestNotFound(f"registry {ref.registry} has no {what}{_error_codes(body)}")
        after = " after authenticating" if status == 401 else ""
        creds = " (credentials configured)" if status in (401, 403) and self.credential_for(ref) else ""
        raise RegistryError(
            f"registry {ref.registry} answered HTTP {status}{after} for {what}{_error_codes(body)}{creds}"
        )

    def credential_for(self, ref: ImageRef) -> tuple[str, str] | None:
        """The (username, password) configured for the image's registry, if any."""
        return self._credentials.get(ref.registry) or self._credentials.get(ref.api_host)

    async def _call(
        self, session: aiohttp.ClientSession, ref: ImageRef, method: str, path: str, accept: str
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One API request, answering a 401 challenge once (bearer token or basic auth)."""
        url = f"{self.scheme(ref.api_host)}://{ref.api_host}/v2/{ref.name}/{path}"
        scope = f"repository:{ref.name}:pull"
        for attempt in (1, 2):
            headers = {"Accept": accept}
            authorization = self._authorization(ref, scope)
            if authorization:
                headers["Authorization"] = authorization
            try:
                async with session.request(method, url, headers=headers, timeout=self._timeout) as resp:
                    status, rheaders = resp.status, resp.headers
                    body = b"" if method == "HEAD" else await self._read(resp, ref)
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise RegistryError(f"could not reach registry {ref.registry}: {_describe(exc)}") from None
            log.debug("registry %s: %s %s -> %s", ref.registry, method, path, status)
            if (
                status != 401
                or attempt == 2
                or not await self._authenticate(session, ref, scope, rheaders.get("WWW-Authenticate", ""))
            ):
                return status, rheaders, body
        raise AssertionError("unreachable")

    async def _read(self, resp: aiohttp.ClientResponse, ref: ImageRef) -> bytes:
        body = bytearray()
        async for chunk in resp.content.iter_chunked(65536):
            body += chunk
            if len(body) > MAX_DOCUMENT:
                raise RegistryError(f"registry {ref.registry} sent more than {MAX_DOCUMENT} bytes for a document")
        return bytes(body)

    def _authorization(self, ref: ImageRef, scope: str) -> str | None:
        cached = self._tokens.get((ref.api_host, scope))
        if cached and cached[1] > self._clock():
            return f"Bearer {cached[0]}"
        credential = self.credential_for(ref)
        if ref.api_host in self._basic_hosts and credential:
            return aiohttp.BasicAuth(*credential).encode()
        return None

    async def _authenticate(self, session: aiohttp.ClientSession, ref: ImageRef, scope: str, challenge: str) -> bool:
        """Act on a 401 challenge; False when there is nothing new to try."""
        kind, params = parse_challenge(challenge)
        if kind == "basic":
            if ref.api_host in self._basic_hosts or not self.credential_for(ref):
                return False
            self._basic_hosts.add(ref.api_host)
            return True
        if kind != "bearer" or not params.get("realm"):
            return False
        token, ttl = await self._fetch_token(session, ref, params, scope)
        # refresh a little early so a token never expires between check and use
        self._tokens[(ref.api_host, scope)] = (token, self._clock() + max(ttl - 10, ttl / 2))
        return True

    async def _fetch_token(
        self, session: aiohttp.ClientSession, ref: ImageRef, params: dict[str, str], scope: str
    ) -> tuple[str, float]:
        realm = urlsplit(params["realm"])
        credential = self.credential_for(ref)
        if realm.scheme not in ("http", "https") or not realm.netloc:
            raise RegistryError(f"registry {ref.registry} named an unusable token service")
        if credential and realm.scheme == "http" and self.scheme(realm.netloc) != "http":
            raise RegistryError(
                f"registry {ref.registry} asks for credentials over plain http at "
                f"{realm.hostname}; refusing to send them"
            )
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in (params.get("scope") or scope).split()]
        try:
            async with session.get(
                params["realm"],
                params=query,
                timeout=self._timeout,
                auth=aiohttp.BasicAuth(*credential) if credential else None,
            ) as resp:
                status = resp.status
                data = await resp.json(content_type=None) if status == 200 else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise RegistryError(
                f"could not get a token for registry {ref.registry} from {realm.hostname}: {_describe(exc)}"
            ) from None
        if status != 200:
            refused = " (credentials refused)" if status in (401, 403) and credential else ""
            raise RegistryError(
                f"token service {realm.hostname} for registry {ref.registry} answered HTTP {status}{refused}"
            )
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token service {realm.hostname} for registry {ref.registry} gave no token")
        expires_in = data.get("expires_in") if isinstance(data, dict) else None
        # the token spec: no expires_in means 60 s, and no token lives shorter than that
        ttl = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in >= 60 else 60.0
        return token, ttl
