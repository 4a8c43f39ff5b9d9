"""Metadata complete: the build recorded commit SHA, pipeline run and build time, and the image agrees.

Where the image carries the OCI annotations or labels ``org.opencontainers.image.revision``
and ``org.opencontainers.image.created``, they must match what the build reported: the
revision is the recorded commit, and the created time lies between the commit time and the
recorded build time. Reproducible builds (SOURCE_DATE_EPOCH: ko, Bazel, Nix, buildx) set
created to the commit time itself, so it may be days before ``built_at``. The commit time
comes from the source host; without it the earliest accepted time is ``built_at`` minus one
hour, and the evidence says so. The commit end allows five minutes of clock skew; the build end one
hour, since a pipeline may report ``built_at`` when its job starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.clock import format_duration
from checks.base import Gate, GateContext, GateResult, ManifestNotFound, RegistryError, SourceHostError

REVISION = "org.opencontainers.image.revision"
CREATED = "org.opencontainers.image.created"
CLOCK_SKEW = timedelta(minutes=5)
# a pipeline may report built_at when its job starts, before the image's layers are written
AFTER_BUILT_AT = timedelta(hours=1)
WITHOUT_COMMIT_TIME = timedelta(hours=1)  # how long before built_at a build may start, when the commit time is unknown
_SHA = re.compile(r"[0-9a-fA-F]{7,40}")


def _utc(value: datetime) -> datetime:
    # naive timestamps (e.g. read back from SQLite) are stored as UTC
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _parse_time(text: str) -> datetime | None:
    try:
        return _utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        return None


@dataclass(frozen=True)
class _Window:
    """The earliest created time an image may carry, and what that time is."""

    earliest: datetime
    what: str
    commit_time_known: bool
    lookup_error: str | None = None  # GitHub could not be asked: an earlier time is unverified, not wrong


async def _window(ctx: GateContext, sha: str, built_at: datetime) -> _Window:
    fallback = _utc(built_at) - WITHOUT_COMMIT_TIME
    repository = ctx.service_config.repository
    unknown = "the build time minus 1h, since the commit time is unknown"
    if not _SHA.fullmatch(sha):
        return _Window(fallback, f"{unknown} (no valid commit SHA is recorded)", False)
    if ctx.source_host is None:
        return _Window(fallback, f"{unknown} (no GitHub credentials)", False)
    try:
        when = await ctx.source_host.commit_time(repository, sha)
    except SourceHostError as exc:
        return _Window(fallback, f"{unknown} (GitHub could not give it: {exc})", False, str(exc))
    if when is None:
        return _Window(fallback, f"{unknown} ({repository} has no commit {sha[:12]})", False)
    return _Window(_utc(when), f"the commit time of {sha[:12]} in {repository}", True)


def _judge_created(label: str, when: datetime, built_at: datetime, window: _Window) -> tuple[str, str, str]:
    """(problem, unverified, note) for one created time; at most one is not empty."""
    if when > _utc(built_at) + AFTER_BUILT_AT:
        return (
            f"{label} is more than {format_duration(AFTER_BUILT_AT)} after the recorded build time "
            f"{_utc(built_at).isoformat()}",
            "",
            "",
        )
    if when >= window.earliest - CLOCK_SKEW:
        return "", "", f"{label} is between {window.what} and the build time"
    if window.lookup_error:
        return "", f"{label} is before {window.what}", ""
    why = (
        "an image cannot be built before its commit"
        if window.commit_time_known
        else "a build that stamps the commit time needs GitHub access to be verified"
    )
    return f"{label} is before {window.what}, {window.earliest.isoformat()}: {why}", "", ""


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
    window: _Window | None = None
    notes: list[str] = []
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
                    elif built_at is not None:
                        if window is None:
                            window = await _window(ctx, sha, built_at)
                            evidence["created_earliest"] = window.earliest.isoformat()
                            evidence["created_earliest_is"] = window.what
                        label = f"image {source} {CREATED}={created}"
                        problem, doubt, note = _judge_created(label, when, built_at, window)
                        problems += [problem] if problem else []
                        unverified = doubt or unverified
                        notes += [note] if note else []
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
        + (" and agree with the image's OCI metadata" if compared else "")
        + (f" ({'; '.join(notes)})" if notes else ""),
        **evidence,
    )


GATE = Gate(name="metadata_complete", title="Metadata complete", evaluate=_evaluate)
