"""promobot.yml: valid as a whole or refused as a whole, with every mistake named by its place."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, parse_config
from tests.harness import CONFIG

ROOT = Path(__file__).resolve().parent.parent

BROKEN = """
environments:
  - name: dev
  - name: production
    approval: manual
    approvers: [platform-lead]
    approval_ttl: soon
    windows: ["weekdays 9-5"]
    timezone: Mars/Olympus
policy:
  immutable_tag_pattern: "([0-9"
  block_severities: [critical, SEVERE]
services:
  api-gateway:
    repository: acme
    image: registry.example.com/acme/api-gateway
    channel: "#deploys"
    wokflow: deploy.yml
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.problems


def test_every_mistake_is_named_with_its_place():
    problems = problems_of(BROKEN)
    joined = "\n".join(problems)
    for expected in (
        "environments.production.approvers: not Slack user or user-group ids: platform-lead",
        "environments.production.approval_ttl: not a duration: 'soon'",
        "environments.production.windows: not a window: 'weekdays 9-5'",
        "environments.production.timezone: unknown time zone 'Mars/Olympus'",
        "policy.immutable_tag_pattern: not a regular expression",
        "policy.block_severities.1: Input should be 'CRITICAL'",
        "services.api-gateway.repository: must be a GitHub owner/name",
        "services.api-gateway.channel: must be a Slack channel id",
        "services.api-gateway.workflow: field required",
        "services.api-gateway.wokflow: unknown field",
    ):
        assert expected in joined, f"{expected!r} not in:\n{joined}"
    assert any("(line 6)" in p for p in problems if p.startswith("environments.production.approvers"))


def test_the_contract_example_is_valid():
    config = parse_config(CONFIG)
    assert config.environment_names == ["dev", "staging", "production"]
    production = config.environment("production")
    assert production.approval_ttl == timedelta(hours=4) and production.soak_time == timedelta(hours=1)
    assert config.previous_environment("production") == "staging" and config.next_environment("dev") == "staging"
    assert (
        parse_config((ROOT / "examples" / "promobot.yml").read_text()).services["api-gateway"].workflow == "deploy.yml"
    )


def test_manual_approval_needs_approvers_and_names_must_be_unique():
    no_approvers = "\n".join(problems_of(CONFIG.replace("approvers: [U0LEAD, S0RELEASE]", "approvers: []")))
    assert "environments.production: approval: manual needs at least one approver" in no_approvers
    # cross-field rules are checked once every field is valid
    twice = "\n".join(problems_of(CONFIG.replace("- name: staging", "- name: dev")))
    assert "names must be unique, repeated: dev" in twice


def test_yaml_syntax_errors_give_the_line():
    assert problems_of("environments:\n  - name: dev\n   bad: [")[0].startswith("line ")


def test_settings_come_from_the_environment_and_hide_secrets(monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-value")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db/promobot")
    settings = Settings()
    assert settings.secret("slack_bot_token") == "xoxb-secret-value"
    assert "xoxb-secret-value" not in repr(settings)
    from storage.db import redact_url

    assert "pw" not in redact_url(settings.database_url)


def run_cli(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_config_validate_command(tmp_path):
    good = run_cli("config", "validate", "examples/promobot.yml")
    assert good.returncode == 0 and "valid — 3 environments (dev → staging → production)" in good.stdout
    bad_file = tmp_path / "promobot.yml"
    bad_file.write_text(BROKEN)
    bad = run_cli("config", "validate", str(bad_file))
    assert bad.returncode == 2
    assert "services.api-gateway.workflow: field required" in bad.stderr


def test_serve_refuses_an_invalid_file_before_starting(tmp_path):
    bad_file = tmp_path / "promobot.yml"
    bad_file.write_text(BROKEN)
    result = run_cli(
        "serve",
        "--http",
        "--port",
        "0",
        env={
            "PROMOBOT_CONFIG": str(bad_file),
            "SLACK_BOT_TOKEN": "xoxb-x",
            "SLACK_SIGNING_SECRET": "s",
            "DATABASE_URL": f"sqlite:///{tmp_path}/p.db",
        },
    )
    assert result.returncode == 2 and "invalid configuration" in result.stderr
    assert not (tmp_path / "p.db").exists()


def test_the_last_environment_needs_a_person():
    text = CONFIG.replace("    approval: manual\n", "    approval: automatic\n")
    assert "environments.production: the last environment needs approval: manual" in "\n".join(problems_of(text))
