"""The framework's ceiling: a slack-bolt AsyncApp over aiohttp that only acknowledges and answers through
response_url, with nothing behind it. bench/ack_bench.py runs it beside promobot.

    python bench/bare_bolt_app.py PORT   (SLACK_SIGNING_SECRET, SLACK_BOT_TOKEN, SLACK_API_URL from the environment)
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient


def make_app() -> web.Application:
    client = AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"])
    bolt = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"], process_before_response=False)

    async def answer(ack: Any, body: dict, respond: Any) -> None:
        await ack()
        await respond(text=f"{body['command']} {body.get('text', '')}: ok", response_type="ephemeral")

    for command in ("/promote", "/status", "/rollback"):
        bolt.command(command)(answer)

    async def click(ack: Any, respond: Any) -> None:
        await ack()
        await respond(text="ok", response_type="ephemeral", replace_original=False)

    for action in ("promotion.approve", "promotion.reject", "promotion.cancel", "promotion.revoke"):
        bolt.action(action)(click)

    async def slack_events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
