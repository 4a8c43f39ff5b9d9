"""``POST /github/webhook``: GitHub's ``workflow_run`` and ``deployment_protection_rule`` events, signed with
GITHUB_WEBHOOK_SECRET.

A delivery is acted on once across replicas (its X-GitHub-Delivery id is
recorded first); the outcome itself is recorded by the tracker, which the
polling pass shares, so a webhook and a poll of the same run count once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import Any

from aiohttp import web

from bot.engine.tracking import Tracker
from handlers.http_body import BadJson, BodyTooLarge, json_object, read_body, too_large

log = logging.getLogger(__name__)

# GitHub caps deliveries at 25 MB; a workflow_run delivery is tens of KB. Nothing larger is read.
MAX_WEBHOOK_BYTES = 2 * 1024 * 1024
HANDLED = ("workflow_run", "deployment_protection_rule")


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """X-Hub-Signature-256: ``sha256=`` and the HMAC-SHA256 of the raw body, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[len("sha256=") :].strip().encode(), expected.encode())


_RUN_TEXT = ("name", "display_title", "html_url", "status", "conclusion", "event", "path", "head_branch", "head_sha")


def workflow_run_problem(payload: dict[str, Any]) -> str | None:
    """What is wrong with a ``workflow_run`` delivery's shape, or None: GitHub's own deliveries always pass."""
    run, repository = payload.get("workflow_run"), payload.get("repository")
    if not isinstance(run, dict):
        return "workflow_run must be an object"
    if not isinstance(repository, dict) or not isinstance(repository.get("full_name"), str):
        return "repository.full_name must be a string"
    if not isinstance(run.get("id"), int) or isinstance(run.get("id"), bool):
        return "workflow_run.id must be a number"
    for key in _RUN_TEXT:
        if run.get(key) is not None and not isinstance(run[key], str):
            return f"workflow_run.{key} must be a string"
    if payload.get("action") is not None and not isinstance(payload["action"], str):
        return "action must be a string"
    return None


def protection_rule_problem(payload: dict[str, Any]) -> str | None:
    """What is wrong with a ``deployment_protection_rule`` delivery's shape, or None."""
    repository = payload.get("repository")
    if not isinstance(repository, dict) or not isinstance(repository.get("full_name"), str):
        return "repository.full_name must be a string"
    for key in ("action", "environment", "deployment_callback_url", "event"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            return f"{key} must be a string"
    return None


SHAPES = {"workflow_run": workflow_run_problem, "deployment_protection_rule": protection_rule_problem}


def routes(tracker: Tracker, secret: str | None) -> list[web.RouteDef]:
    async def webhook(request: web.Request) -> web.Response:
        if not secret:
            return web.json_response(
                {
                    "error": "GitHub webhooks are not configured: set GITHUB_WEBHOOK_SECRET to "
                    "the webhook's secret (promobot accepts signed deliveries only)"
                },
                status=503,
            )
        try:
            body = await read_body(request, MAX_WEBHOOK_BYTES)
        except BodyTooLarge as exc:
            return too_large(exc, " (promobot handles workflow_run deliveries, which are far smaller)")
        if not signature_ok(secret, body, request.headers.get("X-Hub-Signature-256")):
            return web.json_response(
                {"error": "bad or missing X-Hub-Signature-256: the webhook's secret must equal GITHUB_WEBHOOK_SECRET"},
                status=401,
            )
        event = request.headers.get("X-GitHub-Event", "")
        if event == "ping":
            return web.json_response({"status": "pong"})
        if event not in HANDLED:
            return web.json_response({"status": "ignored", "event": event}, status=202)
        try:
            payload = json_object(body, what="the payload")
        except BadJson as exc:
            return web.json_response(
                {"error": f"{exc} (set the webhook's content type to application/json)"}, status=400
            )
        shape = SHAPES[event](payload)
        if shape:
            return web.json_response({"error": f"not a {event} delivery: {shape}"}, status=400)
        delivery = request.headers.get("X-GitHub-Delivery")
        if delivery and not await asyncio.to_thread(tracker.claim_delivery, delivery, event, body):
            return web.json_response({"status": "duplicate", "delivery": delivery})
        try:
            if event == "deployment_protection_rule":
                state, answered = await tracker.protection_rule(payload, delivery)
                return web.json_response({"status": state, "answered": answered, "delivery": delivery}, status=202)
            result = await tracker.workflow_run(payload)
        except Exception:
            log.exception("webhook delivery %s failed", delivery)
            if delivery:
                await asyncio.to_thread(tracker.release_delivery, delivery)  # so GitHub's redelivery is handled
            return web.json_response({"error": "internal error; redeliver from the webhook's settings"}, status=500)
        return web.json_response({"status": result, "delivery": delivery}, status=202)

    return [web.post("/github/webhook", webhook)]
