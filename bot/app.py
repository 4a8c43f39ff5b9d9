"""App assembly: the one place where concrete clients are chosen and wired together."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from sqlalchemy.engine import Engine

from bot.card_evidence import CardEvidenceNotifier
from bot.config import PromobotConfig, Settings
from bot.dispatch import Dispatcher, DryRunDispatcher, GitHubDispatcher
from bot.github_client import github_factory
from bot.promotions import PromotionService, utcnow
from bot.registry import OciRegistryClient
from bot.roles import ApproverDirectory, Notifier
from bot.slack_directory import SlackDirectory, StaticDirectory
from bot.source_host import GitHubSourceHost
from handlers.commands import CommandRouter
from storage import migrate
from storage.db import create_db_engine
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


def instance_id(settings: Settings) -> str:
    """This process's name for outbox claims. Unique per process unless PROMOBOT_INSTANCE_ID names it
    (a stable name lets a restarted process take back its own claims at once)."""
    return settings.promobot_instance_id or f"{socket.gethostname()}-{os.getpid()}"


def open_database(settings: Settings, *, upgrade: bool = True) -> Engine:
    engine = create_db_engine(settings.database_url)
    if upgrade:
        migrate.upgrade(engine)
    return engine


def build(settings: Settings, config: PromobotConfig, *, notifier: Notifier | None = None,
          directory: ApproverDirectory | None = None, dispatcher: Dispatcher | None = None,
          clock: Callable[[], datetime] = utcnow, echo: Callable[[str], None] | None = None,
          with_slack: bool = True) -> Promobot:
    """Wire storage, gates' evidence sources, GitHub, Slack and the engine from settings."""
    engine = open_database(settings)
    slack_client = None
    if with_slack and settings.slack_bot_token is not None:
        from slack_sdk.web.async_client import AsyncWebClient
        from handlers.slack_notifier import SlackNotifier
        slack_client = AsyncWebClient(token=settings.secret("slack_bot_token"), base_url=settings.slack_api_url)
        notifier = notifier or SlackNotifier(slack_client)
        directory = directory or SlackDirectory(slack_client)
    if notifier is None:
        raise ValueError("no notifier: set SLACK_BOT_TOKEN (or use `promobot shell`)")
    factory = github_factory(settings) if settings.github_configured else None
    if dispatcher is None:
        dispatcher = GitHubDispatcher(factory) if factory else DryRunDispatcher(echo=echo)
    ledger = SqlLedger(engine)
    source_host = GitHubSourceHost(factory) if factory else None
    # every card, whoever draws it, carries the commits, history and stability approvers decide on
    notifier = CardEvidenceNotifier(notifier, config=config, ledger=ledger, history=source_host, clock=clock)
    service = PromotionService(
        config=config, engine=engine, ledger=ledger, dispatcher=dispatcher, notifier=notifier,
        directory=directory or StaticDirectory(), registry=OciRegistryClient.from_env(os.environ),
        source_host=source_host, clock=clock, instance_id=instance_id(settings))
    bot = Promobot(settings, config, engine, service, CommandRouter(service), slack_client)
    if slack_client is not None:
        bot.bolt = build_bolt(settings, bot)
    return bot


def build_bolt(settings: Settings, bot: Promobot) -> Any:
    from slack_bolt.async_app import AsyncApp
    from handlers.slack_app import register
    socket_mode = settings.slack_app_token is not None
    secret = settings.secret("slack_signing_secret")
    if not secret and not socket_mode:
        raise ValueError("SLACK_SIGNING_SECRET is required in HTTP mode (Slack signs every request with it)")
    app = AsyncApp(client=bot.slack_client, signing_secret=secret or "unused-in-socket-mode",
                   request_verification_enabled=bool(secret), process_before_response=False)
    register(app, bot.service, bot.router)
    return app
