"""Source commit reachable: the build's commit exists and is on the service's ref."""

from __future__ import annotations

from checks.base import Gate, GateContext, GateResult, SourceHostError


async def _evaluate(ctx: GateContext) -> GateResult:
    artifact = ctx.artifact
    if artifact is None or not artifact.commit_sha:
        return GATE.failed(
            f"no commit SHA is recorded for `{ctx.tag}`", "Report artifact.built with commit_sha from the build."
        )
    if ctx.source_host is None:
        return GATE.errored(
            "could not verify the source commit: no GitHub credentials are configured",
            "Set GITHUB_TOKEN (or GitHub App credentials), or switch this check off with "
            "checks.source_commit_reachable: false for the environment.",
        )
    svc = ctx.service_config
    try:
        reachable, why = await ctx.source_host.commit_reachable(svc.repository, artifact.commit_sha, svc.ref)
    except SourceHostError as exc:
        return GATE.errored(f"could not verify the source commit: {exc}")
    if reachable:
        return GATE.passed(why, repository=svc.repository, ref=svc.ref, commit=artifact.commit_sha)
    return GATE.failed(
        why,
        f"Build from a commit on {svc.ref} of {svc.repository}.",
        repository=svc.repository,
        ref=svc.ref,
        commit=artifact.commit_sha,
    )


GATE = Gate(name="source_commit_reachable", title="Source commit reachable", evaluate=_evaluate)
