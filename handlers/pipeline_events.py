"""Pipeline events: their shapes, checked by pure functions, and handing a checked event to the engine.

Validation (``validate_event``) is shared with ``promobot report`` and
``promobot shell``: a bad event is refused as a whole with every bad field
named, and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.engine.service import PromotionService
from checks.reports import ReportError, parse_sbom, parse_scan

TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
URL = re.compile(r"^https?://[^\s<>|]+$")  # what Slack can show as a link, and nothing it could misread
COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str | None = Field(default=None, min_length=1, max_length=200)
    service: str = Field(min_length=1, max_length=100)
    tag: str = Field(json_schema_extra={"pattern": TAG.pattern})

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if not TAG.match(v):
            raise ValueError("not a valid image tag (letters, digits, '.', '_', '-'; at most 128)")
        return v


def _aware(v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() == "now":
        return datetime.now(UTC)
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("not an ISO 8601 timestamp (e.g. 2026-11-26T10:15:00Z)") from None
    if isinstance(v, datetime) and v.tzinfo is None:
        raise ValueError("needs a time zone (e.g. 2026-11-26T10:15:00Z)")
    return v


class ArtifactBuilt(_Event):
    type: Literal["artifact.built"]
    digest: str = Field(json_schema_extra={"pattern": DIGEST.pattern})
    commit_sha: str = Field(json_schema_extra={"pattern": COMMIT.pattern})
    pipeline_run_id: str
    built_at: datetime = Field(json_schema_extra={"description": "ISO 8601 with a time zone, or now"})

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
    url: str | None = Field(default=None, json_schema_extra={"pattern": URL.pattern})
    finished_at: datetime | None = None
    promotion_id: str | None = Field(default=None, min_length=1, max_length=100)  # the dispatch's inputs.promotion_id
    digest: str | None = None  # the digest deployed or verified (the dispatch's inputs.image_digest)

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not DIGEST.match(v):
            raise ValueError("not an image digest (expected sha256: and 64 lowercase hex digits)")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not URL.match(v):
            raise ValueError("not a plain http(s) URL (no spaces, <, > or |)")
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
    checks: dict[str, str | bool | int | float | None] = Field(default_factory=dict)


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


class AuthorizeRequest(BaseModel):
    """``POST /api/v1/deployments/authorize``: a deploy run asking whether it may deploy."""

    model_config = ConfigDict(extra="forbid")
    service: str = Field(min_length=1, max_length=100)
    environment: str = Field(min_length=1, max_length=100)
    image_digest: str
    promotion_id: str = Field(min_length=1, max_length=100)
    run_id: str
    run_attempt: int | None = Field(default=None, ge=1)
    repository: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
    image_tag: str | None = None

    @field_validator("image_digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not DIGEST.match(v):
            raise ValueError("not an image digest (expected sha256: and 64 lowercase hex digits)")
        return v

    @field_validator("run_id", mode="before")
    @classmethod
    def _run_id(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or not re.fullmatch(r"[0-9]{1,20}", v):
            raise ValueError("not a workflow run id (GITHUB_RUN_ID, a number)")
        return v


def validate_authorize(body: Any, *, services: Any, environments: list[str]) -> AuthorizeRequest:
    """A checked authorize request, or BadEvent naming every bad field."""
    if not isinstance(body, dict):
        raise BadEvent(["(body): expected a JSON object"])
    problems: list[str] = []
    request = None
    try:
        request = AuthorizeRequest.model_validate(body)
    except ValidationError as exc:
        for err in exc.errors():
            place = ".".join(str(p) for p in err["loc"]) or "(body)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{place}: {msg.replace('Field required', 'field required')}")
    if isinstance(body.get("service"), str) and body["service"] and body["service"] not in services:
        problems.append(f"service: unknown service {body['service']!r} (known: {', '.join(sorted(services))})")
    env = body.get("environment")
    if isinstance(env, str) and env and env not in environments:
        problems.append(f"environment: unknown environment {env!r} (known: {', '.join(environments)})")
    if problems or request is None:
        raise BadEvent(problems)
    return request


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


def sent_digest(body: dict[str, Any]) -> str:
    """The idempotency hash of an event as the pipeline sent it: a resend of the same body is the same
    event even when the bot reads a field differently each time (``now`` becomes the bot's clock)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def validate_event(body: Any, *, services: Any = None, environments: list[str] | None = None) -> dict[str, Any]:
    """A checked event as a dict (with ``body_sha256``, the hash of the body as sent), or BadEvent
    naming every bad field."""
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
            msg = msg.replace("Field required", "field required").replace(
                "Extra inputs are not permitted", "unknown field"
            )
            problems.append(f"{place}: {msg}")
    service = body.get("service")
    if services is not None and isinstance(service, str) and service and service not in services:
        problems.append(f"service: unknown service {service!r} (known: {', '.join(sorted(services))})")
    env = body.get("environment")
    if (
        environments is not None
        and "environment" in EVENT_TYPES[type_].model_fields
        and isinstance(env, str)
        and env
        and env not in environments
    ):
        problems.append(f"environment: unknown environment {env!r} (known: {', '.join(environments)})")
    if problems or event is None:
        raise BadEvent(problems)
    return {**event.model_dump(exclude_none=False), "body_sha256": sent_digest(body)}


class BadFile(ValueError):
    """A report or SBOM file that cannot be sent. The message is one line: the file, what was
    expected and what was found."""


EXPECTED = {"report": "a JSON scanner report", "sbom": "a JSON SBOM"}


def read_json_file(path: str, field: str) -> Any:
    """The JSON document in ``path`` (for the event field ``field``), or BadFile saying why not."""
    expected = EXPECTED.get(field, "a JSON document")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise BadFile(f"{path}: expected {expected}, but the file cannot be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadFile(f"{path}: expected {expected}, found binary data (not UTF-8 text)") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        found = "an empty file" if not text.strip() else f"text that is not JSON ({exc})"
        raise BadFile(f"{path}: expected {expected}, found {found}") from None


def check_report(event: Mapping[str, Any], files: Mapping[str, str] | None = None) -> None:
    """Read a validated scan.finished or sbom.published event's report as the bot will; BadFile
    (naming the file it came from, if any) when it is not a report of the claimed format."""
    try:
        if event.get("type") == "scan.finished":
            parse_scan(event["scanner"], event["report"])
        elif event.get("type") == "sbom.published":
            parse_sbom(event["format"], event["sbom"])
    except ReportError as exc:
        raise BadFile(report_problem(event, exc, files)) from None


def report_problem(event: Mapping[str, Any], exc: ReportError, files: Mapping[str, str] | None = None) -> str:
    """One line for a report the parser refused: the file (or the field) it came from, and why."""
    field = "report" if event.get("type") == "scan.finished" else "sbom"
    source = (files or {}).get(field)
    return f"{source}: {exc}" if source else f"{field}: {exc}"


async def apply_event(
    service: PromotionService, event: dict[str, Any], *, actor: str = "pipeline", follow_up: bool = True
) -> str:
    """Hand a validated event to the engine; returns recorded | duplicate | unchanged.

    ``follow_up: False`` records history without starting automatic promotions.
    """
    events = service.events
    handlers: dict[str, Callable[..., Any]] = {
        "artifact.built": events.artifact_built,
        "deployment.finished": events.deployment_finished,
        "verification.finished": events.verification_finished,
        "scan.finished": events.scan_finished,
        "sbom.published": events.sbom_published,
    }
    if event["type"] == "verification.finished":
        return await events.verification_finished(event, actor=actor, follow_up=follow_up)
    return await handlers[event["type"]](event, actor=actor)
