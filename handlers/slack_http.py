"""``POST /slack/events`` (HTTP mode): only requests Slack signed cost promobot anything.

The body is read up to ``MAX_SLACK_BYTES`` (refused from Content-Length before
reading), its signature is checked on the raw bytes, and only then is it parsed,
once: Bolt is handed the parsed body (its own parser reads any form body that
contains the word "payload" as an interactivity payload, and dropped such
commands). A signed body of the wrong shape is a 400. An Events API callback
that Slack redelivers (``X-Slack-Retry-Num``, same ``event_id``) is
acknowledged and not handled a second time, on any replica.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from handlers.http_body import BadJson, BodyTooLarge, form_fields, json_object, no_nul, read_body, too_large

log = logging.getLogger(__name__)

# A slash command is a few hundred bytes; the largest interactivity payloads (a view submission, a click on a
# 50-block card) are a few hundred KB. Nothing bigger is read.
MAX_SLACK_BYTES = 1024 * 1024


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def parsed(raw: bytes, content_type: str) -> dict[str, Any]:
    """The signed body as Bolt reads it: a command's form fields, an interactivity ``payload`` field's JSON
    object, or an Events API JSON object; BadJson when it is none of them."""
    if content_type.startswith("application/json"):
        return json_object(raw, what="the event")
    try:
        form = {
            no_nul(k, what="a form field"): no_nul(v, what=f"the form field {k!r}")
            for k, v in form_fields(raw.decode("utf-8")).items()
        }
    except UnicodeDecodeError:
        raise BadJson("the body is not UTF-8 form data") from None
    if "payload" in form:
        return json_object(form["payload"], what="the payload")
    return form


def route(
    bolt: Any, signing_secret: str, first_event_delivery: Callable[[str, bytes], Awaitable[bool]]
) -> web.RouteDef:
    """The route; ``first_event_delivery(event_id, body)`` claims an Events API delivery once across replicas."""
    verifier = SignatureVerifier(signing_secret)

    async def slack_events(request: web.Request) -> web.Response:
        try:
            raw = await read_body(request, MAX_SLACK_BYTES)
        except BodyTooLarge as exc:
            return too_large(exc, " (Slack never sends that much)")
        if not verifier.is_valid(
            body=raw,
            timestamp=request.headers.get("X-Slack-Request-Timestamp", ""),
            signature=request.headers.get("X-Slack-Signature", ""),
        ):
            return _bad("invalid or missing Slack signature, or a stale timestamp", 401)
        try:
            body = parsed(raw, request.headers.get("Content-Type", ""))
        except BadJson as exc:
            return _bad(str(exc))
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if isinstance(event_id, str) and not await first_event_delivery(event_id, raw):
            retry = request.headers.get("X-Slack-Retry-Num")
            log.info("Slack event %s delivered again (retry %s); handled once already", event_id, retry)
            return web.Response(status=200)
        # Bolt takes a parsed body only in its "socket_mode", which also skips its second check of the
        # signature: this route checked it above, on the raw bytes
        bolt_request = AsyncBoltRequest(
            body=body,
            query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]
            mode="socket_mode",
        )
        return await to_aiohttp_response(await bolt.async_dispatch(bolt_request))

    return web.post("/slack/events", slack_events)
