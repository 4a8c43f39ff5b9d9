"""Reading request bodies safely: a size limit per route checked before anything is read, and JSON that is
too deep or of the wrong shape refused as the client's mistake (400), never as promobot's (500)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from yarl import URL

MAX_DEPTH = 64  # the deepest real report seen (SARIF, CycloneDX) nests about 12 levels


class BodyTooLarge(Exception):
    def __init__(self, limit: int, size: int | None = None, *, what: str = "request body"):
        self.limit, self.size = limit, size
        shown = f"{size} bytes" if size is not None else "more"
        super().__init__(f"{what} too large: {shown}; the limit is {human_bytes(limit)}")


class BadJson(ValueError):
    """The body is not the JSON this route takes; the message says what was wrong."""


def human_bytes(n: int) -> str:
    return f"{n // (1024 * 1024)} MB" if n >= 1024 * 1024 else f"{n // 1024} KB"


async def read_body(request: web.Request, limit: int, *, what: str = "request body") -> bytes:
    """The raw body, at most ``limit`` bytes: refused from Content-Length before reading, or as soon as a
    body without one grows past the limit."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(limit, request.content_length, what=what)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit, what=what)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(exc: BodyTooLarge, hint: str = "") -> web.Response:
    return web.json_response({"error": f"{exc}{hint}"}, status=413)


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects: level by level, without recursion."""
    depth, level = 0, [value]
    while True:
        containers = [node for node in level if isinstance(node, (dict, list))]
        if not containers:
            return depth
        depth += 1
        level = [child for node in containers for child in (node.values() if isinstance(node, dict) else node)]


def _has_nul(value: Any) -> bool:
    """Whether any key or string in ``value`` holds a NUL character."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any("\x00" in key for key in node):
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and "\x00" in node:
            return True
    return False


def no_nul(text: str, *, what: str) -> str:
    """``text``, unless it holds a NUL character: no sender means one, and PostgreSQL cannot store it."""
    if "\x00" in text:
        raise BadJson(f"{what} contains a NUL character (\\u0000)")
    return text


def json_object(raw: bytes | str, *, what: str = "the body", max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """``raw`` as a JSON object; BadJson names the problem (not JSON, not an object, nested too deep, a NUL
    character in a string)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BadJson(f"{what} is nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJson(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadJson(f"{what} must be a JSON object, not {type(value).__name__}")
    text = raw.encode() if isinstance(raw, str) else raw
    # fewer brackets than the limit cannot nest deeper than it: most bodies skip the walk
    if text.count(b"[") + text.count(b"{") > max_depth and _depth(value) > max_depth:
        raise BadJson(f"{what} is nested deeper than {max_depth} levels")
    # JSON can only carry a NUL in a string as the escape \u0000
    if b"\\u0000" in text and _has_nul(value):
        raise BadJson(f"{what} contains a NUL character (\\u0000) in a string: no sender means one")
    return value


def form_fields(text: str) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body, the last value of a repeated one; what
    ``urllib.parse.parse_qs(text, keep_blank_values=True)`` gives, decoded by yarl's C unquoter (a Slack click
    carries its whole card percent-encoded, and urllib decoded it ten times slower)."""
    query = URL.build(query_string=text, encoded=True).query
    return dict(query.items())  # a repeated field: its last value, like parse_qs(...)[key][-1]
