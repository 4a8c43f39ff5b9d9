"""The pipeline API described as OpenAPI 3.1, built from the same models that validate the events.

Served at ``GET /api/v1/openapi.json`` and checked in as ``docs/openapi.json`` (a test keeps the two equal).
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from handlers.pipeline_events import EVENT_TYPES, AuthorizeRequest

_REF = "#/components/schemas/{model}"


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="Problem")}}},
    }


def promobot_version() -> str:
    try:
        return package_version("promobot")
    except PackageNotFoundError:
        return "0.0.0"


def document(version: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the pipeline API."""
    version = version or promobot_version()
    schemas: dict[str, Any] = {}
    refs = []
    for model in EVENT_TYPES.values():
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        refs.append({"$ref": _REF.format(model=model.__name__)})
    authorize = AuthorizeRequest.model_json_schema(ref_template=_REF)
    schemas.update(authorize.pop("$defs", {}))
    schemas["AuthorizeRequest"] = authorize
    schemas["AuthorizeDecision"] = {
        "type": "object",
        "required": ["authorized", "decision", "reason", "promotion_id", "run_id"],
        "properties": {
            "authorized": {"type": "boolean"},
            "decision": {"enum": ["allowed", "denied"]},
            "reason": {"type": "string", "description": "authorized, or the check that refused (e.g. wrong_actor)"},
            "promotion_id": {"type": "string"},
            "service": {"type": "string"},
            "environment": {"type": "string"},
            "image_digest": {"type": "string"},
            "image_tag": {"type": ["string", "null"]},
            "run_id": {"type": "string"},
            "run_attempt": {"type": ["integer", "null"]},
            "repeated": {"type": "boolean", "description": "this run (and attempt) was already decided"},
            "message": {"type": "string"},
            "rule": {"type": "string"},
            "error": {"type": "string", "description": "what refused, and what to do"},
        },
    }
    schemas["Problem"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "what is wrong, and what to do"},
            "problems": {"type": "array", "items": {"type": "string"}, "description": "one line per bad field"},
            "rule": {"type": "string", "description": "the rule that refused (409)"},
        },
    }
    schemas["Accepted"] = {
        "type": "object",
        "required": ["status", "result", "type"],
        "properties": {
            "status": {"const": "accepted"},
            "result": {"enum": ["recorded", "duplicate", "unchanged"]},
            "type": {"type": "string"},
        },
    }
    schemas["GateReport"] = {
        "type": "object",
        "required": ["service", "tag", "target_environment", "eligible", "gates"],
        "properties": {
            "service": {"type": "string"},
            "tag": {"type": "string"},
            "digest": {"type": ["string", "null"]},
            "source_environment": {"type": ["string", "null"]},
            "target_environment": {"type": "string"},
            "evaluated_at": {"type": "string", "format": "date-time"},
            "eligible": {"type": "boolean"},
            "gates": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["gate", "title", "status", "reason"],
                    "properties": {
                        "gate": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"enum": ["passed", "failed", "errored", "off", "skipped"]},
                        "reason": {"type": "string"},
                        "evidence": {"type": "object"},
                        "next_step": {"type": "string"},
                    },
                },
            },
        },
    }
    unauthorized = _problem("No valid bearer token (PROMOBOT_API_TOKEN).")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "promobot pipeline API",
            "version": version,
            "description": "What a CI/CD pipeline tells promobot (builds, deployments, verifications, scans, SBOMs) "
            "and what it may ask (eligibility, the promotion record, whether a deploy run may deploy). "
            "Every route but /healthz and this document needs `Authorization: Bearer <PROMOBOT_API_TOKEN>`.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/events": {
                "post": {
                    "summary": "Report a pipeline event; an event_id makes a resend harmless",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": refs,
                                    "discriminator": {
                                        "propertyName": "type",
                                        "mapping": {
                                            name: _REF.format(model=model.__name__)
                                            for name, model in EVENT_TYPES.items()
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Accepted: recorded, a duplicate of an earlier event_id, or unchanged.",
                            "content": {"application/json": {"schema": {"$ref": _REF.format(model="Accepted")}}},
                        },
                        "400": _problem("Invalid: every bad field is named; nothing was recorded."),
                        "401": unauthorized,
                        "409": _problem("A conflict with what is recorded, such as a tag mutation."),
                        "413": _problem("Over 10 MB."),
                    },
                }
            },
            "/api/v1/deployments/authorize": {
                "post": {
                    "summary": "May this deploy run deploy? The first step of a deploy job; fail the job unless 200",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": _REF.format(model="AuthorizeRequest")}}},
                    },
                    "responses": {
                        "200": {
                            "description": "Authorized: promobot dispatched this run for an approved promotion.",
                            "content": {
                                "application/json": {"schema": {"$ref": _REF.format(model="AuthorizeDecision")}}
                            },
                        },
                        "400": _problem("Invalid: every bad field is named; nothing was recorded."),
                        "401": unauthorized,
                        "403": {
                            "description": "Refused (recorded, audited, alerted): the reason names the check.",
                            "content": {
                                "application/json": {"schema": {"$ref": _REF.format(model="AuthorizeDecision")}}
                            },
                        },
                        "413": _problem("Over 64 KB."),
                        "503": {"description": "GitHub did not answer: nothing is decided; retry after Retry-After."},
                    },
                }
            },
            "/api/v1/eligibility": {
                "get": {
                    "summary": "Every gate for a promotion; requests nothing",
                    "parameters": [
                        {"name": "service", "in": "query", "required": True, "schema": {"type": "string"}},
                        {"name": "tag", "in": "query", "required": False, "schema": {"type": "string"}},
                        {"name": "environment", "in": "query", "required": False, "schema": {"type": "string"}},
                        {
                            "name": "expedite",
                            "in": "query",
                            "required": False,
                            "description": "check as an expedited security promotion, with this reason",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The gate report.",
                            "content": {"application/json": {"schema": {"$ref": _REF.format(model="GateReport")}}},
                        },
                        "400": _problem("An unknown service, environment or tag, named with the closest known."),
                        "401": unauthorized,
                    },
                }
            },
            "/api/v1/promotions/{promotion_id}": {
                "get": {
                    "summary": "The promotion record, in the promotion model's shape",
                    "parameters": [
                        {"name": "promotion_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {
                            "description": "The record.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "401": unauthorized,
                        "404": _problem("No such promotion."),
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Whether the database answers",
                    "security": [],
                    "responses": {"200": {"description": "ok"}, "503": {"description": "the database does not answer"}},
                }
            },
        },
    }


if __name__ == "__main__":  # python -m handlers.openapi > docs/openapi.json
    print(json.dumps(document(), indent=2, sort_keys=True))
