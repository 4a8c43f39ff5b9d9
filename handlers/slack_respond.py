"""Answers through a command's or a click's ``response_url``, over one kept-alive HTTP session.

Bolt's ``respond`` opens a new session, and a new connection, for every answer; under load that was a
fifth of the event loop's time. ``Responder.to(body)`` is a drop-in ``respond`` for one request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.webhook.async_client import AsyncWebhookClient

log = logging.getLogger(__name__)

Respond = Callable[..., Awaitable[None]]


class Responder:
    """One aiohttp session for every response_url answer of this process (opened on first use, on the
    event loop that answers Slack)."""

    def __init__(self, timeout: float = 30.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def to(self, body: dict[str, Any]) -> Respond:
        """``respond(text=…, blocks=…, response_type=…, replace_original=…)`` for the request ``body``."""
        url = body.get("response_url")

        async def respond(**payload: Any) -> None:
            if not url:
                log.warning("no response_url to answer on; the answer is dropped")
                return
            await self.send(url, {k: v for k, v in payload.items() if v is not None})

        return respond

    async def send(self, url: str, payload: dict[str, Any]) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            response = await AsyncWebhookClient(url, session=self._session).send_dict(payload)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # the request was acknowledged already; an answer Slack cannot take is not a crash of the bot
            log.warning("could not answer on response_url: %s", type(exc).__name__)
            return
        if response.status_code != 200:
            # the URL is Slack's secret for this one answer: it is not logged
            log.warning("Slack refused an answer on response_url: %s %s", response.status_code, response.body[:200])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
