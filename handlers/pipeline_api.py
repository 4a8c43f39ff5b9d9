"""The pipeline event API: ``POST /api/v1/events`` and the read-only routes beside it."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import web

from bot.engine.errors import Conflict, UserError
from bot.engine.service import PromotionService
from checks.reports import ReportError
from handlers import openapi
from handlers.http_body import BadJson, BodyTooLarge, json_object, read_body, too_large
from handlers.pipeline_events import BadEvent, apply_event, report_problem, validate_event

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 10 * 1024 * 1024  # scanner reports and SBOMs of several MB are normal


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
            return _problem(409, str(exc), rule="tag mutation" if "mutation" in str(exc) else "conflict")
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
        record = service.record(request.match_info["promotion_id"])
        if record is None:
            return _problem(404, f"no promotion {request.match_info['promotion_id']!r}")
        return web.json_response(record)

    description = openapi.document()

    async def openapi_json(_: web.Request) -> web.Response:
        return web.json_response(description)

    return [
        web.get("/api/v1/openapi.json", openapi_json),
        web.post("/api/v1/events", post_event),
        web.get("/api/v1/eligibility", eligibility),
        web.get("/api/v1/promotions/{promotion_id}", promotion),
    ]
