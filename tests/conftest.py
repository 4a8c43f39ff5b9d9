"""Fixtures: a fresh database per test (SQLite file, or a PostgreSQL schema), the Slack and
GitHub stand-ins, and the real bot served on a free port.

PROMOBOT_TEST_DATABASE=postgres runs the whole suite against PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.github_api import FakeGitHub
from tests.fakes.slack_api import FakeSlack
from tests.harness import (API_TOKEN, BOT_TOKEN, CONFIG, GITHUB_TOKEN, RUN_NAME, SIGNING_SECRET, WEBHOOK_SECRET,
                           Clock, Harness, PostgresSchema, database_kind, free_port)
from tests.oci_registry import oci_registry  # noqa: F401  (fixture)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_json(relative: str) -> dict:
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))


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


def settings_for(database_url: str, slack, github, **overrides):
    from bot.config import Settings
    values = dict(promobot_config="(tests)", database_url=database_url, slack_bot_token=BOT_TOKEN,
                  slack_signing_secret=SIGNING_SECRET, slack_api_url=slack.api_url, github_token=GITHUB_TOKEN,
                  github_api_url=github.api_url, github_webhook_secret=WEBHOOK_SECRET,
                  promobot_api_token=API_TOKEN, promobot_instance_id="test-1", promobot_outbox_interval=0.2,
                  promobot_tracking_poll_interval=0.3)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def config_text():
    return CONFIG


@pytest.fixture
def settings_overrides():
    """Settings a test changes (``@pytest.mark.parametrize("settings_overrides", [{...}])``)."""
    return {}


@pytest.fixture
async def harness(database_url, slack, github, config_text, settings_overrides):
    from bot.app import build
    from bot.config import parse_config
    from bot.server import make_web_app
    clock = Clock()
    bot = build(settings_for(database_url, slack, github, **settings_overrides), parse_config(config_text),
                clock=clock)
    runner = web.AppRunner(make_web_app(bot), shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as session:
        yield Harness(f"http://127.0.0.1:{port}", slack, github, bot, session, clock)
    await runner.cleanup()
    bot.engine.dispose()
