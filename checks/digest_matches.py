"""Digest matches: the registry still serves, under the tag, exactly the digest recorded at build."""

from __future__ import annotations

from checks.base import Gate, GateContext, GateResult, ManifestNotFound, RegistryError


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
    if info.digest.lower() != artifact.digest.strip().lower():
        return GATE.failed(
            f"tag mutation: {ref} now points to {info.digest}, but the build recorded {artifact.digest}",
            "Do not promote this tag: find out who re-pushed it, then build and promote a new commit-SHA tag.",
            image=ref,
            recorded_digest=artifact.digest,
            registry_digest=info.digest,
            media_type=info.media_type,
        )
    return GATE.passed(
        f"{ref} still resolves to the build's digest {info.digest}",
        image=ref,
        digest=info.digest,
        media_type=info.media_type,
    )


GATE = Gate(name="digest_matches", title="Digest matches", evaluate=_evaluate)
