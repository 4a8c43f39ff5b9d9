"""``POST /github/webhook``: GitHub's ``workflow_run`` and ``deployment_protection_rule`` events, signed with
GITHUB_WEBHOOK_SECRET.

A delivery is acted on once across replicas (its X-GitHub-Delivery id is
recorded first); the outcome itself is recorded by the tracker, which the
polling pass shares, so a webhook and a poll of the same run count once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from aiohttp import web

from bot.engine.tracking import Tracker

log = logging.getLogger(__name__)

HANDLED = ("workflow_run", "deployment_protection_rule")


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """X-Hub-Signature-256: ``sha256=`` and the HMAC-SHA256 of the raw body, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[len("sha256=") :].strip().encode(), expected.encode())


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
        body = await request.read()
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
            payload = json.loads(body)
        except ValueError:
            return web.json_response(
                {"error": "the payload is not JSON (set the webhook's content type to application/json)"}, status=400
            )
        delivery = request.headers.get("X-GitHub-Delivery")
        if delivery and not tracker.claim_delivery(delivery, event, body):
            return web.json_response({"status": "duplicate", "delivery": delivery})
        try:
            if event == "deployment_protection_rule":
                state, answered = await tracker.protection_rule(payload, delivery)
                return web.json_response({"status": state, "answered": answered, "delivery": delivery}, status=202)
            result = await tracker.workflow_run(payload)
        except Exception:
            log.exception("webhook delivery %s failed", delivery)
            if delivery:
                tracker.release_delivery(delivery)  # so that GitHub's redelivery is handled
            return web.json_response({"error": "internal error; redeliver from the webhook's settings"}, status=500)
        return web.json_response({"status": result, "delivery": delivery}, status=202)

    return [web.post("/github/webhook", webhook)]
