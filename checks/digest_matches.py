"""Digest matches: the registry still serves, under the tag, exactly the digest recorded at build.

For a multi-arch image the tag points to an image index. CI may record the index's digest or the
digest of one of its platform manifests: either matches while the index still is, or still lists,
that digest, and the gate names which one matched. A recorded manifest that the index does not
list is a tag mutation; an attestation manifest is no image and does not count.
"""

from __future__ import annotations

from typing import Any

from checks.base import Gate, GateContext, GateResult, ManifestInfo, ManifestNotFound, RegistryError

SHOWN = 6


def _platforms(info: ManifestInfo) -> str:
    names = [e.platform for e in info.manifests if not e.attestation]
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more if names else "no platform manifests"


async def _evaluate(ctx: GateContext) -> GateResult:
    image = ctx.service_config.image
    ref = f"{image}:{ctx.tag}"
    artifact = ctx.artifact
    if artifact is None:
        return GATE.failed(
            f"no artifact.built recorded for {ctx.service} {ctx.tag}, so there is no build-time digest to compare",
            "Report the build from CI (`promobot report artifact.built …` with the pushed digest), then check again.",
            service=ctx.service,
            tag=ctx.tag,
            image=ref,
        )
    if ctx.registry is None:
        return GATE.errored(
            "could not verify digest: no registry client is configured",
            "Configure registry access for promobot (see PROMOBOT_REGISTRY_AUTH).",
            image=ref,
            recorded_digest=artifact.digest,
        )
    try:
        info = await ctx.registry.manifest(image, ctx.tag)
    except ManifestNotFound as exc:
        return GATE.failed(
            f"missing image: the registry has no {ref}",
            f"Push {ref} again from the build, or fix `services.{ctx.service}.image`.",
            image=ref,
            recorded_digest=artifact.digest,
            registry=str(exc),
        )
    except RegistryError as exc:
        return GATE.errored(f"could not verify digest: {exc}", image=ref, recorded_digest=artifact.digest)

    recorded = artifact.digest.strip().lower()
    evidence: dict[str, Any] = {"image": ref, "recorded_digest": artifact.digest, "media_type": info.media_type}
    if info.manifests:
        evidence["index_manifests"] = [
            {"digest": e.digest, "platform": e.platform, "media_type": e.media_type} for e in info.manifests
        ]
    if info.digest.lower() == recorded:
        if info.manifests:
            return GATE.passed(
                f"{ref} still resolves to the build's digest {info.digest}: the image index ({_platforms(info)})",
                digest=info.digest,
                matched="index",
                **evidence,
            )
        return GATE.passed(f"{ref} still resolves to the build's digest {info.digest}", digest=info.digest, **evidence)

    entry = next((e for e in info.manifests if e.digest.lower() == recorded), None)
    if entry is not None and not entry.attestation:
        return GATE.passed(
            f"{ref} is the image index {info.digest}, which still lists the build's digest "
            f"{artifact.digest} as its {entry.platform} manifest",
            digest=artifact.digest,
            index_digest=info.digest,
            matched=entry.platform,
            **evidence,
        )
    if entry is not None:
        return GATE.failed(
            f"the build recorded {artifact.digest}, which is an attestation manifest in the image index "
            f"{info.digest} of {ref}, not an image",
            "Record the image index's digest (or one platform manifest's) in artifact.built, then check again.",
            registry_digest=info.digest,
            **evidence,
        )
    if info.manifests:
        return GATE.failed(
            f"tag mutation: {ref} now points to the image index {info.digest}, which neither is the build's "
            f"recorded digest {artifact.digest} nor lists it among its manifests ({_platforms(info)})",
            "Do not promote this tag: find out who re-pushed it, then build and promote a new commit-SHA tag.",
            registry_digest=info.digest,
            **evidence,
        )
    return GATE.failed(
        f"tag mutation: {ref} now points to {info.digest}, but the build recorded {artifact.digest}",
        "Do not promote this tag: find out who re-pushed it, then build and promote a new commit-SHA tag.",
        registry_digest=info.digest,
        **evidence,
    )


GATE = Gate(name="digest_matches", title="Digest matches", evaluate=_evaluate)
