"""Metadata complete: the build recorded commit SHA, pipeline run and build time, and the image agrees.

Where the image carries the OCI annotations or labels ``org.opencontainers.image.revision``
and ``org.opencontainers.image.created``, they must match what the build reported.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from checks.base import Gate, GateContext, GateResult, ManifestNotFound, RegistryError

REVISION = "org.opencontainers.image.revision"
CREATED = "org.opencontainers.image.created"
CLOCK_SKEW = timedelta(minutes=5)
CREATED_TOLERANCE = timedelta(hours=1)
_SHA = re.compile(r"[0-9a-fA-F]{7,40}")


def _utc(value: datetime) -> datetime:
    # naive timestamps (e.g. read back from SQLite) are stored as UTC
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _parse_time(text: str) -> datetime | None:
    try:
        return _utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        return None


async def _evaluate(ctx: GateContext) -> GateResult:
    artifact = ctx.artifact
    if artifact is None:
        return GATE.failed(
            f"no artifact.built recorded for {ctx.service} {ctx.tag}",
            "Report the build from CI (`promobot report artifact.built …`), then check again.",
            service=ctx.service,
            tag=ctx.tag,
        )
    problems: list[str] = []
    sha, run_id = (artifact.commit_sha or "").strip(), (artifact.pipeline_run_id or "").strip()
    built_at = artifact.built_at
    if not sha:
        problems.append("commit SHA is missing")
    elif not _SHA.fullmatch(sha):
        problems.append(f"commit SHA {sha!r} is not 7–40 hex characters")
    if not run_id:
        problems.append("pipeline run id is missing")
    if built_at is None:
        problems.append("build timestamp is missing")
    elif _utc(built_at) > _utc(ctx.now) + CLOCK_SKEW:
        problems.append(
            f"build timestamp {_utc(built_at).isoformat()} is in the future (now {_utc(ctx.now).isoformat()})"
        )
    evidence: dict = {
        "commit_sha": artifact.commit_sha,
        "pipeline_run_id": artifact.pipeline_run_id,
        "built_at": _utc(built_at).isoformat() if built_at else None,
    }

    unverified = None  # why the image's own metadata could not be compared, if it could not
    image = f"{ctx.service_config.image}:{ctx.tag}"
    if ctx.registry is None:
        evidence["image_metadata"] = "not compared: no registry client is configured"
    elif not ctx.environment_config.checks.digest_matches:
        evidence["image_metadata"] = "not compared: registry checks are off here (checks.digest_matches: false)"
    else:
        try:
            info = await ctx.registry.manifest(ctx.service_config.image, ctx.tag)
        except ManifestNotFound as exc:
            evidence["image_metadata"] = f"not compared: {exc}"  # the digest gate reports a missing image
        except RegistryError as exc:
            unverified = str(exc)
            evidence["image_metadata"] = f"not compared: {exc}"
        else:
            # annotations first: they are what the manifest itself says; labels are in the config
            for source, values in (("annotation", info.annotations), ("label", info.labels)):
                revision, created = values.get(REVISION), values.get(CREATED)
                if revision:
                    evidence[f"image_revision_{source}"] = revision
                    a, b = revision.strip().lower(), sha.lower()
                    if sha and not (a.startswith(b) or b.startswith(a)):
                        problems.append(
                            f"image {source} {REVISION}={revision} disagrees with the recorded commit SHA {sha}"
                        )
                if created:
                    evidence[f"image_created_{source}"] = created
                    when = _parse_time(created)
                    if when is None:
                        problems.append(f"image {source} {CREATED}={created!r} is not an RFC 3339 timestamp")
                    elif built_at is not None and abs(when - _utc(built_at)) > CREATED_TOLERANCE:
                        problems.append(
                            f"image {source} {CREATED}={created} is more than 1h from the "
                            f"recorded build time {_utc(built_at).isoformat()}"
                        )
    if problems:
        return GATE.failed(
            f"metadata of {image} is incomplete or inconsistent: " + "; ".join(problems),
            "Fix the build so its artifact.built report (commit_sha, pipeline_run_id, "
            "built_at) and the image's OCI labels describe the same build, then rebuild.",
            problems=problems,
            **evidence,
        )
    if unverified:
        return GATE.errored(f"could not verify image metadata: {unverified}", **evidence)
    compared = any(k.startswith(("image_revision_", "image_created_")) for k in evidence)
    return GATE.passed(
        f"commit {sha}, run {run_id} and build time are recorded"
        + (" and agree with the image's OCI metadata" if compared else ""),
        **evidence,
    )


GATE = Gate(name="metadata_complete", title="Metadata complete", evaluate=_evaluate)
