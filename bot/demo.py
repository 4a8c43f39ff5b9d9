"""`promobot shell --demo`: a believable history, recorded the way promobot records anything.

Two builds of the first service: an old one (six weeks ago) that went through every environment, and a new
one (yesterday) verified everywhere but the last. Builds and the first environment are the pipeline's own
reports; every later environment is reached only through a promotion, requested, approved by the
environment's first approver, dispatched (a dry run without GitHub credentials) and reported back by its
run. The engine runs on a clock set to each moment of that history, so the promotions carry their own
times, and nothing in the history is out-of-band.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.text import SLACK_USER

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OLD, NEW = "a1b2c3d", "7a3f9c2"
REQUESTER = "U0DEMOHISTORY"  # who asked for the history's promotions: a Slack-shaped id that is nobody's


class DemoClock:
    """The engine's clock: real time, or the moment of the history being recorded."""

    def __init__(self) -> None:
        self.fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed or datetime.now(UTC)


def build_events(service: str, tag: str, at: datetime, digest: str) -> list[dict[str, Any]]:
    """The build's reports: the artifact, a clean Trivy scan and a CycloneDX SBOM."""
    return [
        {
            "type": "artifact.built",
            "service": service,
            "tag": tag,
            "digest": digest,
            "commit_sha": tag + "e" * 33,
            "pipeline_run_id": f"{tag[:4]}1",
            "built_at": at.isoformat(),
        },
        {
            "type": "scan.finished",
            "service": service,
            "tag": tag,
            "scanner": "trivy",
            "report": json.loads((EXAMPLES / "reports" / "trivy-clean.json").read_text()),
        },
        {
            "type": "sbom.published",
            "service": service,
            "tag": tag,
            "format": "cyclonedx",
            "sbom": json.loads((EXAMPLES / "reports" / "sbom.cdx.json").read_text()),
        },
    ]


def in_environment(service: str, tag: str, environment: str, deployed: datetime, run_id: str) -> list[dict]:
    """What the deploy run reports: its deployment, then its verification an hour later."""
    return [
        {
            "type": "deployment.finished",
            "service": service,
            "tag": tag,
            "environment": environment,
            "status": "success",
            "run_id": run_id,
            "finished_at": deployed.isoformat(),
        },
        {
            "type": "verification.finished",
            "service": service,
            "tag": tag,
            "environment": environment,
            "result": "passed",
            "checks": {"smoke": "passed", "e2e": "passed"},
            "finished_at": (deployed + timedelta(hours=1)).isoformat(),
        },
    ]


async def record_history(
    bot: Any,
    clock: DemoClock,
    send: Callable[[dict[str, Any]], Awaitable[str]],
    settle: Callable[[], Awaitable[None]],
    *,
    push: Callable[[str, str], str] | None = None,
) -> list[str]:
    """Record the demo history; returns what could not be recorded (nothing, with the example config).
    ``push(image, tag)`` pushes each build's image (the demo's registry) and gives its digest."""
    config, service = bot.config, next(iter(bot.config.services))
    envs = config.environment_names
    problems: list[str] = []
    now = datetime.now(UTC)
    for tag, built, reach in ((OLD, now - timedelta(days=45), envs), (NEW, now - timedelta(hours=30), envs[:-1])):
        at = built
        image = config.services[service].image
        digest = push(image, tag) if push else "sha256:" + (tag * 10)[:64].ljust(64, "0")
        for event in build_events(service, tag, built, digest):
            clock.fixed = at
            problems += [result for result in [await send(event)] if not result.startswith("202")]
        for i, env in enumerate(reach):
            if i > 0:  # past the first environment only a promotion takes it there
                soak = config.environment(env).soak_time
                at = max(at + timedelta(hours=1), at + soak + timedelta(minutes=1))
                clock.fixed = at
                problem = await _promote(bot, service, tag, env)
                if problem:
                    problems.append(problem)
                    break
                await settle()
            deployed = at + timedelta(hours=2)
            for event in in_environment(service, tag, env, deployed, f"{tag[:4]}{i + 2}"):
                clock.fixed = datetime.fromisoformat(event["finished_at"])
                problems += [result for result in [await send(event)] if not result.startswith("202")]
            at = deployed + timedelta(hours=1)
    clock.fixed = None
    return problems


async def _promote(bot: Any, service: str, tag: str, environment: str) -> str | None:
    """Request the promotion and, where a person must approve, approve it as the environment's first approver."""
    result = await bot.service.request(REQUESTER, service, tag, environment)
    if result.outcome == "refused" or result.promotion_id is None:
        reasons = "; ".join(r.title for r in result.report.blocking) or result.message
        return f"the demo's promotion of {tag} to {environment} was refused: {reasons}"
    if result.outcome == "requested":
        approvers = await bot.service.notifications.approver_users(bot.config.environment(environment).approvers)
        approver = next((u for u in sorted(approvers) if SLACK_USER.match(u)), None)
        if approver is None:
            return f"the demo cannot approve {environment}: its approvers name no Slack user (use --group S…=U…)"
        decided = await bot.service.approve(result.promotion_id, approver)
        if not decided.changed:
            return f"the demo's approval of {tag} to {environment} changed nothing: {decided.message}"
    return None
