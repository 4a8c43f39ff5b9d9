"""GitHub webhook deliveries as GitHub sends them: the real octokit payloads, adapted to a run of the
GitHub stand-in, signed with X-Hub-Signature-256."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import aiohttp

from tests.harness import WEBHOOK_SECRET, fixture_json


def workflow_run(
    run: dict, *, action: str = "completed", conclusion: str | None = "success", repository: str = "acme/api-gateway"
) -> dict:
    """A ``workflow_run`` payload for ``run`` (as ``FakeGitHub.runs()`` lists it)."""
    payload = fixture_json(f"github/webhook-workflow_run-{'completed' if action == 'completed' else 'requested'}.json")
    payload["action"] = action
    payload["repository"]["full_name"] = repository
    payload["workflow_run"].update(
        {key: run[key] for key in ("id", "name", "display_title", "html_url", "event", "path", "workflow_id")},
        actor=run["actor"],
        triggering_actor=run["triggering_actor"],
        run_attempt=run["run_attempt"],
        head_branch=run["head_branch"],
        status="completed" if action == "completed" else "queued",
        conclusion=conclusion if action == "completed" else None,
    )
    payload["workflow"] = {**payload.get("workflow", {}), "id": run["workflow_id"], "path": run["path"]}
    return payload


def protection_rule(
    run: dict, environment: str, *, api_url: str, repository: str = "acme/api-gateway", callback: str | None = None
) -> dict:
    """A ``deployment_protection_rule`` ``requested`` delivery for a job of ``run`` targeting ``environment``:
    GitHub's example payload (tests/fixtures/github/webhook-deployment_protection_rule-requested.json, from
    octokit/webhooks.net test/Octokit.Webhooks.Test/Resources/deployment_protection_rule/requested.payload.json
    at b6e30b03e9ff2f5ae259c8442f6c6becbdfe4f51), with the fields GitHub fills for a workflow run's job: the
    review URL of the run as ``deployment_callback_url``, top-level ``sha``/``ref`` and ``installation``."""
    payload = fixture_json("github/webhook-deployment_protection_rule-requested.json")
    payload["environment"] = environment
    payload["event"] = run["event"]
    payload["sha"], payload["ref"] = run["head_sha"], run["head_branch"]
    payload["deployment_callback_url"] = callback or (
        f"{api_url}/repos/{repository}/actions/runs/{run['id']}/deployment_protection_rule"
    )
    payload["deployment"].update(environment=environment, original_environment=environment, sha=run["head_sha"])
    payload["deployment"]["ref"] = run["head_branch"]
    payload["repository"]["full_name"] = repository
    payload["installation"] = {"id": 1, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="}
    return payload


def headers(
    body: bytes, *, event: str = "workflow_run", delivery: str | None = None, secret: str = WEBHOOK_SECRET
) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
        "User-Agent": "GitHub-Hookshot/test",
    }


async def deliver(session: aiohttp.ClientSession, base_url: str, payload: dict, **kw) -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    async with session.post(f"{base_url}/github/webhook", data=body, headers=headers(body, **kw)) as resp:
        return resp.status, await resp.json()
