"""Fixtures: a fresh database per test (SQLite file, or a PostgreSQL schema), the Slack and
GitHub stand-ins, and the real bot served on a free port.

PROMOBOT_TEST_DATABASE=postgres runs the whole suite against PostgreSQL.
"""

from __future__ import annotations

import contextlib

import aiohttp
import pytest
from aiohttp import web

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
