"""Fixtures: a fresh database per test (SQLite file, or a PostgreSQL schema), the Slack and
GitHub stand-ins, and the real bot served on a free port.

PROMOBOT_TEST_DATABASE=postgres runs the whole suite against PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.fakes.github_api import FakeGitHub
from tests.fakes.slack_api import FakeSlack
from tests.harness import (
    BOT_TOKEN,
    CONFIG,
    GITHUB_TOKEN,
    RUN_NAME,
    Clock,
    Harness,
    PostgresSchema,
    config_on,
    database_kind,
    free_port,
    settings_for,
)
from tests.oci_registry import oci_registry, start_registry  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
PROMOBOT_CODE = tuple(str(ROOT / package) + "/" for package in ("bot", "handlers", "storage", "checks"))
TEST_CODE = str(ROOT / "tests") + "/"


@pytest.fixture(autouse=True)
def no_database_on_the_event_loop():
    """promobot never waits for its database on the thread that runs its event loop (which acks Slack):
    every statement promobot's own code runs there, with no test code on the stack, fails the test. (A test
    may read the database itself from the loop's thread; a bot built by a fixture migrates it there.)"""
    found: list[str] = []

    def check(_conn, _cursor, statement, *_args) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        frame, ours = sys._getframe(1), []
        while frame is not None:
            name = frame.f_code.co_filename
            if name.startswith(TEST_CODE):
                return
            if name.startswith(PROMOBOT_CODE):
                ours.append(f"{name[len(str(ROOT)) + 1 :]}:{frame.f_lineno} {frame.f_code.co_name}")
            frame = frame.f_back
        if ours:
            found.append(f"{statement.split()[0]} from " + " <- ".join(ours[:6]))

    event.listen(Engine, "before_cursor_execute", check)
    try:
        yield
    finally:
        event.remove(Engine, "before_cursor_execute", check)
    assert not found, "database statements on the event loop's thread:\n" + "\n".join(sorted(set(found)))


@pytest.fixture
def database_url(tmp_path):
    if database_kind() == "postgres":
        schema = PostgresSchema()
        yield schema.url
        schema.drop()
    else:
        yield f"sqlite:///{tmp_path / 'promobot.db'}"


@pytest.fixture(scope="session")
def slack_server():
    fake = FakeSlack(bot_token=BOT_TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def github_server():
    fake = FakeGitHub(token=GITHUB_TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def slack(slack_server):
    slack_server.reset()
    slack_server.usergroups = {"S0RELEASE": ["U0RM1", "U0RM2"]}
    return slack_server


@pytest.fixture
def github(github_server):
    github_server.reset()
    github_server.ghes_no_run_details = False
    github_server.dispatch_delay = 0.0
    for repo in ("acme/api-gateway", "acme/billing"):
        github_server.add_repo(repo)
        github_server.add_workflow(repo, "deploy.yml", run_name=RUN_NAME)
    return github_server


@pytest.fixture(scope="session")
def image_registry(tmp_path_factory):
    """One real OCI registry (Debian's docker-registry) for the session: the images the scenarios promote.
    Production's digest gate cannot be switched off, so every promotion to production asks it."""
    registry = start_registry(tmp_path_factory.mktemp("images"))
    yield registry
    registry.stop()


@pytest.fixture
def config_text():
    return CONFIG


@pytest.fixture
def settings_overrides():
    """Settings a test changes (``@pytest.mark.parametrize("settings_overrides", [{...}])``)."""
    return {}


@contextlib.asynccontextmanager
async def serving(database_url, slack, github, config_text, settings_overrides, image_registry):
    """promobot's server in this process, and its runner (a test may stop it itself)."""
    from bot.app import build
    from bot.config import parse_config
    from bot.server import make_web_app

    clock = Clock()
    settings = settings_for(database_url, slack, github, **settings_overrides)
    bot = build(settings, parse_config(config_on(image_registry.host, config_text)), clock=clock)
    runner = web.AppRunner(make_web_app(bot), shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            yield (
                Harness(
                    f"http://127.0.0.1:{port}", slack, github, bot, session, clock, registry_host=image_registry.host
                ),
                runner,
            )
    finally:
        if runner.server is not None:
            await runner.cleanup()
        bot.engine.dispose()


@pytest.fixture
async def harness(database_url, slack, github, config_text, settings_overrides, image_registry):
    async with serving(database_url, slack, github, config_text, settings_overrides, image_registry) as (h, _):
        yield h


@pytest.fixture
async def server(database_url, slack, github, config_text, settings_overrides, image_registry):
    """The harness and the server's runner: for a test that stops the server itself."""
    async with serving(database_url, slack, github, config_text, settings_overrides, image_registry) as served:
        yield served
