"""App assembly, the composition root: the one place where concrete clients are chosen and wired together.

Read this first. ``build`` takes the settings and promobot.yml and returns the
running parts: storage, the evidence sources the gates read (ledger, OCI
registry, GitHub), the dispatcher, Slack, the engine and the command router.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.engine import Engine

from bot.clients import slack_retry
from bot.clients.dispatchers import DryRunDispatcher, GitHubDispatcher
from bot.clients.github import github_factory, github_login
from bot.clients.registry import OciRegistryClient
from bot.clients.slack_directory import SlackDirectory, StaticDirectory
from bot.clients.source_host import GitHubSourceHost
from bot.clock import utcnow
from bot.config import PromobotConfig, Settings
from bot.engine.card_evidence import CardEvidenceNotifier
from bot.engine.roles import ApproverDirectory, Dispatcher, Notifier
from bot.engine.service import PromotionService
from checks.base import Registry
from handlers.commands import CommandRouter
from handlers.followups import FollowUps
from handlers.slack_app import register
from handlers.slack_notifier import SlackNotifier
from handlers.slack_respond import Responder
from storage import migrate
from storage.db import create_db_engine, reads_together
from storage.ledger import SqlLedger

log = logging.getLogger(__name__)


@dataclass
class Promobot:
    settings: Settings
    config: PromobotConfig
    engine: Engine
    service: PromotionService
    router: CommandRouter
    slack_client: Any = None
    bolt: Any = None
    responder: Responder | None = None  # answers on response_url (closed when the server stops)
    followups: FollowUps | None = None  # what Slack requests leave for after their acks


def instance_id(settings: Settings) -> str:
    """This process's name for outbox claims. Unique per process unless PROMOBOT_INSTANCE_ID names it
    (a stable name lets a restarted process take back its own claims at once)."""
    return settings.promobot_instance_id or f"{socket.gethostname()}-{os.getpid()}"


def open_database(settings: Settings, *, upgrade: bool = True) -> Engine:
    key = settings.secret("promobot_audit_key")
    engine = create_db_engine(settings.database_url, audit_key=key.encode() if key else None)
    if upgrade:
        migrate.upgrade(engine)
    return engine


def build(
    settings: Settings,
    config: PromobotConfig,
    *,
    notifier: Notifier | None = None,
    directory: ApproverDirectory | None = None,
    dispatcher: Dispatcher | None = None,
    clock: Callable[[], datetime] = utcnow,
    echo: Callable[[str], None] | None = None,
    with_slack: bool = True,
    registry: Registry | None = None,
) -> Promobot:
    """Wire storage, gates' evidence sources, GitHub, Slack and the engine from settings."""
    engine = open_database(settings)
    slack_client = None
    if with_slack and settings.slack_bot_token is not None:
        slack_client = AsyncWebClient(
            token=settings.secret("slack_bot_token"),
            base_url=settings.slack_api_url,
            retry_handlers=slack_retry.retry_handlers(),  # messages Slack rate-limits are sent again
        )
        notifier = notifier or SlackNotifier(slack_client)
        directory = directory or SlackDirectory(slack_client)
    if notifier is None:
        raise ValueError("no notifier: set SLACK_BOT_TOKEN (or use `promobot shell`)")
    factory = github_factory(settings) if settings.github_configured else None
    if dispatcher is None:
        dispatcher = GitHubDispatcher(factory, login=github_login(settings)) if factory else DryRunDispatcher(echo=echo)
    ledger = SqlLedger(engine)
    # the gates and cards read commits through lazy clients: no request for the repository itself
    source_host = GitHubSourceHost(github_factory(settings, lazy=True)) if factory else None
    # every card, whoever draws it, carries the commits, history and stability approvers decide on
    notifier = CardEvidenceNotifier(
        notifier,
        config=config,
        ledger=ledger,
        history=source_host,
        clock=clock,
        together=functools.partial(reads_together, engine),
    )
    service = PromotionService(
        config=config,
        engine=engine,
        ledger=ledger,
        dispatcher=dispatcher,
        notifier=notifier,
        directory=directory or StaticDirectory(),
        registry=registry or OciRegistryClient.from_env(os.environ),
        source_host=source_host,
        clock=clock,
        instance_id=instance_id(settings),
        tracking_interval=settings.promobot_tracking_poll_interval,
        run_listing_lag=timedelta(seconds=settings.promobot_run_listing_lag),
    )
    bot = Promobot(settings, config, engine, service, CommandRouter(service), slack_client)
    if slack_client is not None:
        bot.bolt = build_bolt(settings, bot)
    return bot


def build_bolt(settings: Settings, bot: Promobot) -> Any:
    socket_mode = settings.slack_app_token is not None
    secret = settings.secret("slack_signing_secret")
    if not secret and not socket_mode:
        raise ValueError("SLACK_SIGNING_SECRET is required in HTTP mode (Slack signs every request with it)")
    app = AsyncApp(
        client=bot.slack_client,
        signing_secret=secret or "unused-in-socket-mode",
        request_verification_enabled=bool(secret),
        process_before_response=True,  # listeners ack, then hand the rest to FollowUps
    )
    bot.responder = Responder()
    bot.followups = FollowUps()
    register(app, bot.service, bot.router, bot.responder, bot.followups)
    return app
