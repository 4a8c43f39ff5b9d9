"""The pipeline event API: ``POST /api/v1/events`` and the read-only routes beside it."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from typing import Any

from aiohttp import web

from bot.engine.deploy_guard import AUTHORIZE, DeployRequest, GitHubUnavailable
from bot.engine.errors import Conflict, UserError
from bot.engine.service import PromotionService
from checks.reports import ReportError
from handlers import openapi
from handlers.http_body import BadJson, BodyTooLarge, json_object, read_body, too_large
from handlers.pipeline_events import BadEvent, apply_event, report_problem, validate_authorize, validate_event

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 10 * 1024 * 1024  # scanner reports and SBOMs of several MB are normal
MAX_AUTHORIZE_BYTES = 64 * 1024  # a handful of identifiers


def _problem(status: int, error: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status)


def bearer_ok(request: web.Request, token: str | None) -> bool:
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())


def routes(service: PromotionService, api_token: str | None) -> list[web.RouteDef]:
    def unauthorized() -> web.Response:
        hint = (
            "the bot has no PROMOBOT_API_TOKEN set"
            if not api_token
            else "send Authorization: Bearer <PROMOBOT_API_TOKEN>"
        )
        return web.json_response(
            {"error": "unauthorized", "hint": hint}, status=401, headers={"WWW-Authenticate": 'Bearer realm="promobot"'}
        )

    async def authorize(request: web.Request) -> web.Response:
        """May this run deploy? 200 authorized, 403 refused (the step must fail), 503 GitHub did not answer."""
        if not bearer_ok(request, api_token):
            return unauthorized()
        try:
            body = json_object(await read_body(request, MAX_AUTHORIZE_BYTES, what="authorize request"), what="(body)")
        except BodyTooLarge as exc:
            return too_large(exc, ". An authorize request names a run and a promotion; nothing more.")
        except BadJson as exc:
            return _problem(400, "invalid request", problems=[str(exc)])
        try:
            claim = validate_authorize(
                body, services=service.config.services, environments=service.config.environment_names
            )
        except BadEvent as exc:
            return _problem(400, "invalid request", problems=exc.problems)
        try:
            verdict = await service.authorize_deploy(
                DeployRequest(
                    source=AUTHORIZE,
                    repository=claim.repository or service.config.services[claim.service].repository,
                    run_id=claim.run_id,
                    environment=claim.environment,
                    service=claim.service,
                    promotion_id=claim.promotion_id,
                    digest=claim.image_digest,
                    tag=claim.image_tag,
                )
            )
        except GitHubUnavailable as exc:
            wait = max(1, math.ceil(exc.retry_after or 0))
            return web.json_response(
                {"authorized": False, "reason": "github_unavailable", "error": f"{exc}; nothing is decided, retry"},
                status=503,
                headers={"Retry-After": str(wait)},
            )
        answer = {
            "authorized": verdict.allowed,
            "decision": "allowed" if verdict.allowed else "denied",
            "reason": verdict.reason,
            "promotion_id": claim.promotion_id,
            "service": claim.service,
            "environment": claim.environment,
            "image_digest": claim.image_digest,
            "image_tag": verdict.promotion.tag if verdict.allowed and verdict.promotion else claim.image_tag,
            "run_id": claim.run_id,
            "run_attempt": verdict.run_attempt,
            "repeated": verdict.repeated,
        }
        if verdict.allowed:
            return web.json_response({**answer, "message": verdict.message})
        return web.json_response({**answer, "rule": "deploy authorization", "error": verdict.message}, status=403)

    async def post_event(request: web.Request) -> web.Response:
        if not bearer_ok(request, api_token):
            return unauthorized()
        try:
            body = json_object(await read_body(request, MAX_EVENT_BYTES, what="event"), what="(body)")
        except BodyTooLarge as exc:
            return too_large(exc, ". Send a filtered report (e.g. trivy --severity HIGH,CRITICAL) or a smaller SBOM.")
        except BadJson as exc:
            return _problem(400, "invalid event", problems=[str(exc)])
        try:
            event = validate_event(
                body, services=service.config.services, environments=service.config.environment_names
            )
            result = await apply_event(service, event)
        except BadEvent as exc:
            return _problem(400, "invalid event", problems=exc.problems)
        except ReportError as exc:
            return _problem(400, "invalid event", problems=[report_problem(body, exc)])
        except Conflict as exc:
            return _problem(409, str(exc), rule=exc.rule or ("tag mutation" if "mutation" in str(exc) else "conflict"))
        except UserError as exc:
            return _problem(400, "invalid event", problems=[str(exc)])
        return web.json_response({"status": "accepted", "result": result, "type": event["type"]}, status=202)

    async def eligibility(request: web.Request) -> web.Response:
        if not bearer_ok(request, api_token):
            return unauthorized()
        q = request.query
        if not q.get("service"):
            return _problem(400, "invalid query", problems=["service: field required"])
        expedite = q.get("expedite")
        if expedite is not None and not expedite.strip():
            return _problem(400, "invalid query", problems=["expedite: an expedited check needs a reason"])
        try:
            report = await service.check(
                q["service"], q.get("tag") or None, q.get("environment") or None, expedite_reason=expedite
            )
        except UserError as exc:
            return _problem(400, "invalid query", problems=[str(exc)])
        return web.json_response(report.to_json())

    async def promotion(request: web.Request) -> web.Response:
        if not bearer_ok(request, api_token):
            return unauthorized()
        record = await asyncio.to_thread(service.record, request.match_info["promotion_id"])
        if record is None:
            return _problem(404, f"no promotion {request.match_info['promotion_id']!r}")
        return web.json_response(record)

    description = openapi.document()

    async def openapi_json(_: web.Request) -> web.Response:
        return web.json_response(description)

    return [
        web.get("/api/v1/openapi.json", openapi_json),
        web.post("/api/v1/events", post_event),
        web.post("/api/v1/deployments/authorize", authorize),
        web.get("/api/v1/eligibility", eligibility),
        web.get("/api/v1/promotions/{promotion_id}", promotion),
    ]
