"""The one aiohttp server: Slack (HTTP mode), the pipeline API, GitHub webhooks, health and metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import Promobot, instance_id
from bot.jobs import retention
from bot.jobs.digests import DigestScheduler
from handlers import github_webhook, pipeline_api, slack_http
from handlers.followups import FollowUps
from handlers.slack_respond import Responder
from storage.metrics.prometheus import build_registry

log = logging.getLogger(__name__)


def make_web_app(bot: Promobot, *, background: bool = True) -> web.Application:
    """The routes of the public contract; ``background`` runs the dispatch outbox and the run tracking
    in this process."""
    app = web.Application(client_max_size=pipeline_api.MAX_EVENT_BYTES + 1024)
    app.add_routes(pipeline_api.routes(bot.service, bot.settings.secret("promobot_api_token")))
    tracker = bot.service.tracker
    app.add_routes(github_webhook.routes(tracker, bot.settings.secret("github_webhook_secret")))

    async def healthz(_: web.Request) -> web.Response:
        try:
            await asyncio.to_thread(_ping, bot)
        except Exception as exc:
            return web.json_response({"status": "unhealthy", "database": type(exc).__name__}, status=503)
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)

    registry = build_registry(bot.engine)

    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", metrics)

    # Slack over HTTP only with signature verification: in Socket Mode without SLACK_SIGNING_SECRET
    # the Bolt app verifies nothing, and this route would take forged commands and clicks.
    signing_secret = bot.settings.secret("slack_signing_secret")
    if bot.bolt is not None and signing_secret:
        app.add_routes([slack_http.route(bot.bolt, signing_secret, bot.service.first_slack_event)])

    if background:
        interval = bot.settings.promobot_outbox_interval
        app.cleanup_ctx.append(_background(lambda stop: bot.service.run_outbox(stop, interval)))
        app.cleanup_ctx.append(_background(tracker.run))
        app.cleanup_ctx.append(
            _background(
                lambda stop: retention.run(
                    stop,
                    engine=bot.engine,
                    archive_dir=Path(bot.settings.promobot_audit_archive_dir),
                    instance_id=instance_id(bot.settings),
                    clock=bot.service.clock,
                )
            )
        )
        if bot.slack_client is not None and bot.config.digests:
            app.cleanup_ctx.append(_digests(bot))
    if bot.slack_client is not None:
        app.cleanup_ctx.append(_slack_session(bot.slack_client))
    if bot.responder is not None:
        # after the Slack session's context: at cleanup, contexts end in reverse order, so this one ends first
        app.cleanup_ctx.append(_answers(bot.responder, bot.followups))
    return app


FOLLOW_UPS_AT_STOP = 10.0  # seconds a stopping server gives acked Slack requests to be answered


def _answers(responder: Responder, followups: FollowUps | None):
    """What acked Slack requests left to do, done before the server's Slack sessions close. Its end comes
    at cleanup, after aiohttp has waited for the HTTP requests in flight (a click still recording its
    approval when the server began to stop hands its follow-up over only then), and before the Web API
    session closes. (Socket Mode's handler is closed first and does not wait for its listeners: a click
    still being recorded then may go unanswered.)"""

    async def ctx(_: web.Application):
        yield
        if followups is not None and not await followups.drain(FOLLOW_UPS_AT_STOP):
            log.warning("stopping with %d follow-ups of acked Slack requests not done", followups.pending)
        await responder.close()

    return ctx


def _slack_session(client: AsyncWebClient):
    """One kept-alive HTTP session for the Slack Web API while the server runs. Without it slack_sdk
    opens a session, and a connection, for every call: a card redrawn after each approval paid for a
    TCP handshake each time."""

    async def ctx(_: web.Application):
        own = client.session is None or client.session.closed
        if own:
            client.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=client.timeout))
        yield
        if own and client.session is not None:
            await client.session.close()
            client.session = None

    return ctx


def _digests(bot: Promobot):
    """The daily digests' cron jobs; each run is claimed in the database, so one replica posts it."""

    async def ctx(_: web.Application):
        scheduler = DigestScheduler(
            bot.engine, bot.config, bot.slack_client, instance_id(bot.settings), clock=bot.service.clock
        )
        scheduler.start()
        yield
        scheduler.shutdown()

    return ctx


def _ping(bot: Promobot) -> None:
    with bot.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def _background(loop):
    """Run ``loop(stop)`` while the server runs; stop it with the server."""

    async def ctx(_: web.Application):
        stop = asyncio.Event()
        task = asyncio.create_task(loop(stop))
        yield
        stop.set()
        await asyncio.wait_for(task, timeout=30)

    return ctx


GC_YOUNG_THRESHOLD = 10_000  # allocations between young passes (Python's default is 700)


def _freeze_what_startup_made() -> None:
    """Leave what startup made (modules, SQLAlchemy's and Bolt's tables, the configuration) out of the
    garbage collector's passes, and pass less often: a pass stops every thread while it walks the objects
    of its generations, and every ack in flight waits it out. In one run of bench/ack_bench.py on
    PostgreSQL, Python's defaults made 6 full passes of 110-143 ms (and 928 young ones); with this, none
    (30 young ones, the longest 34 ms), and ack p99 went from 138 to 82 ms for mixed commands and from 301
    to 231 ms for clicks."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


async def serve(bot: Promobot, *, port: int, host: str = "0.0.0.0", socket_mode: bool = False) -> None:
    """Run until cancelled: HTTP always (pipeline API, health), plus Socket Mode when asked."""
    runner = web.AppRunner(make_web_app(bot), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    _freeze_what_startup_made()
    log.info(
        "promobot listening on http://%s:%s (Slack over %s)",
        host,
        port,
        "Socket Mode" if socket_mode else "HTTP at /slack/events",
    )
    handler = None
    try:
        if socket_mode:
            handler = AsyncSocketModeHandler(bot.bolt, bot.settings.secret("slack_app_token"))
            await handler.connect_async()
        await asyncio.Event().wait()
    finally:
        if handler is not None:
            await handler.close_async()
        await runner.cleanup()
