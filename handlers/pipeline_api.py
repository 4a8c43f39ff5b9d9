"""The pipeline event API: ``POST /api/v1/events`` and the read-only routes beside it.

Validation is a pure function (``validate_event``) shared with ``promobot
report`` and ``promobot shell``: a bad event is refused as a whole with every
bad field named, and changes nothing.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from datetime import datetime, timezone
from typing import Any, Callable, Literal, Union

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.promotions import Conflict, PromotionService, UserError
from checks.reports import ReportError

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 10 * 1024 * 1024  # scanner reports and SBOMs of several MB are normal
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str | None = Field(default=None, min_length=1, max_length=200)
    service: str = Field(min_length=1, max_length=100)
    tag: str

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if not TAG.match(v):
            raise ValueError("not a valid image tag (letters, digits, '.', '_', '-'; at most 128)")
        return v


def _aware(v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() == "now":
        return datetime.now(timezone.utc)
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("not an ISO 8601 timestamp (e.g. 2026-11-26T10:15:00Z)")
    if isinstance(v, datetime) and v.tzinfo is None:
        raise ValueError("needs a time zone (e.g. 2026-11-26T10:15:00Z)")
    return v


class ArtifactBuilt(_Event):
    type: Literal["artifact.built"]
    digest: str
    commit_sha: str
    pipeline_run_id: str
    built_at: datetime

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not DIGEST.match(v):
            raise ValueError("not an image digest (expected sha256: and 64 lowercase hex digits)")
        return v

    @field_validator("commit_sha")
    @classmethod
    def _commit(cls, v: str) -> str:
        if not COMMIT.match(v):
            raise ValueError("not a commit SHA (7 to 40 lowercase hex digits)")
        return v

    @field_validator("pipeline_run_id", mode="before")
    @classmethod
    def _run_id(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("built_at", mode="before")
    @classmethod
    def _built_at(cls, v: Any) -> Any:
        return _aware(v)


class _InEnvironment(_Event):
    environment: str = Field(min_length=1)
    url: str | None = None
    finished_at: datetime | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://\S+$", v):
            raise ValueError("not an http(s) URL")
        return v

    @field_validator("finished_at", mode="before")
    @classmethod
    def _finished(cls, v: Any) -> Any:
        return _aware(v)


class DeploymentFinished(_InEnvironment):
    type: Literal["deployment.finished"]
    status: Literal["success", "failure"]
    run_id: str | None = None

    @field_validator("run_id", mode="before")
    @classmethod
    def _run_id(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class VerificationFinished(_InEnvironment):
    type: Literal["verification.finished"]
    result: Literal["passed", "failed"]
    checks: dict[str, Union[str, bool, int, float, None]] = Field(default_factory=dict)


class ScanFinished(_Event):
    type: Literal["scan.finished"]
    scanner: Literal["trivy", "grype", "sarif", "cyclonedx"]
    report: dict[str, Any]
    digest: str | None = None


class SbomPublished(_Event):
    type: Literal["sbom.published"]
    format: Literal["cyclonedx", "spdx"]
    sbom: dict[str, Any]
    digest: str | None = None


EVENT_TYPES: dict[str, type[_Event]] = {
    "artifact.built": ArtifactBuilt,
    "deployment.finished": DeploymentFinished,
    "verification.finished": VerificationFinished,
    "scan.finished": ScanFinished,
    "sbom.published": SbomPublished,
}


class BadEvent(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def validate_event(body: Any, *, services: Any = None, environments: list[str] | None = None) -> dict[str, Any]:
    """A checked event as a dict, or BadEvent naming every bad field."""
    if not isinstance(body, dict):
        raise BadEvent(["(body): expected a JSON object with a type field"])
    type_ = body.get("type")
    if type_ not in EVENT_TYPES:
        raise BadEvent([f"type: must be one of {', '.join(EVENT_TYPES)} (got {type_!r})"])
    problems: list[str] = []
    event = None
    try:
        event = EVENT_TYPES[type_].model_validate(body)
    except ValidationError as exc:
        for err in exc.errors():
            place = ".".join(str(p) for p in err["loc"]) or "(body)"
            msg = err["msg"].removeprefix("Value error, ")
            msg = msg.replace("Field required", "field required").replace("Extra inputs are not permitted",
                                                                         "unknown field")
            problems.append(f"{place}: {msg}")
    service = body.get("service")
    if services is not None and isinstance(service, str) and service and service not in services:
        problems.append(f"service: unknown service {service!r} (known: {', '.join(sorted(services))})")
    env = body.get("environment")
    if environments is not None and "environment" in EVENT_TYPES[type_].model_fields \
            and isinstance(env, str) and env and env not in environments:
        problems.append(f"environment: unknown environment {env!r} (known: {', '.join(environments)})")
    if problems:
        raise BadEvent(problems)
    return event.model_dump(exclude_none=False)


async def apply_event(service: PromotionService, event: dict[str, Any], *, actor: str = "pipeline",
                      follow_up: bool = True) -> str:
    """Hand a validated event to the engine; returns recorded | duplicate | unchanged.

    ``follow_up: False`` records history without starting automatic promotions.
    """
    handlers: dict[str, Callable[..., Any]] = {
        "artifact.built": service.artifact_built,
        "deployment.finished": service.deployment_finished,
        "verification.finished": service.verification_finished,
        "scan.finished": service.scan_finished,
        "sbom.published": service.sbom_published,
    }
    if event["type"] == "verification.finished":
        return await service.verification_finished(event, actor=actor, follow_up=follow_up)
    return await handlers[event["type"]](event, actor=actor)


def _problem(status: int, error: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status)


def bearer_ok(request: web.Request, token: str | None) -> bool:
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode())


def routes(service: PromotionService, api_token: str | None) -> list[web.RouteDef]:
    def unauthorized() -> web.Response:
        hint = ("the bot has no PROMOBOT_API_TOKEN set" if not api_token
                else "send Authorization: Bearer <PROMOBOT_API_TOKEN>")
        return web.json_response({"error": "unauthorized", "hint": hint}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="promobot"'})

    async def post_event(request: web.Request) -> web.Response:
        if not bearer_ok(request, api_token):
            return unauthorized()
        if request.content_length is not None and request.content_length > MAX_EVENT_BYTES:
            return _problem(413, f"event too large: {request.content_length} bytes; the limit is "
                                 f"{MAX_EVENT_BYTES // (1024 * 1024)} MB. Send a filtered report (e.g. trivy "
                                 "--severity HIGH,CRITICAL) or a smaller SBOM.")
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > MAX_EVENT_BYTES:
                return _problem(413, f"event too large: over {MAX_EVENT_BYTES // (1024 * 1024)} MB")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return _problem(400, "invalid event", problems=[f"(body): not JSON: {exc}"])
        try:
            event = validate_event(body, services=service.config.services,
                                   environments=service.config.environment_names)
            result = await apply_event(service, event)
        except BadEvent as exc:
            return _problem(400, "invalid event", problems=exc.problems)
        except ReportError as exc:
            field = "report" if body.get("type") == "scan.finished" else "sbom"
            return _problem(400, "invalid event", problems=[f"{field}: {exc}"])
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
        try:
            report = await service.check(q["service"], q.get("tag") or None, q.get("environment") or None)
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

    return [web.post("/api/v1/events", post_event), web.get("/api/v1/eligibility", eligibility),
            web.get("/api/v1/promotions/{promotion_id}", promotion)]
