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
    assert "environments.production.approval: the last environment needs approval: manual, not 'automatic'" in (
        "\n".join(problems_of(text))
    )


# --- the promotion model's non-negotiables ---------------------------------------------------------

CONFIGURED_AWAY = """\
environments:
  - name: dev
    checks: {digest_matches: false, immutable_tag: false}
  - name: staging
    approval: automatic
    protected: true
    checks: {vulnerabilities: false, soak_time: false}
  - name: production
    approval: none
    approvers: [U0LEAD, lead]
    checks:
      immutable_tag: false
      digest_matches: false
      previous_environment_verified: false
      no_skipped_environment: false
      vulnerabilities: false
      sbom_present: false
      soak_time: false
      deployment_window: false
policy:
  mutable_tags: [snapshot]
  block_severities: [HIGH]
  expedite:
    approvers: [U0ONCALL]
    required_approvals: 1
services:
  api-gateway:
    repository: acme/api-gateway
    image: registry.example.com/acme/api-gateway
    workflow: deploy.yml
    channel: C0DEPLOYS
"""


def test_the_non_negotiables_cannot_be_configured_away_and_every_violation_is_named_at_once():
    problems = problems_of(CONFIGURED_AWAY)
    joined = "\n".join(problems)
    expected = [
        "environments.staging.approval: staging is protected: it needs approval: manual, not 'automatic' (line 5)",
        "environments.staging.checks.vulnerabilities: vulnerabilities cannot be switched off in staging "
        "(protected: true)",
        "environments.production.approval: the last environment needs approval: manual, not 'none' (line 9)",
        # a field mistake does not hide the cross-field rules (pydantic alone would report it first, alone)
        "environments.production.approvers: not Slack user or user-group ids: lead (line 10)",
        "policy.block_severities: must include CRITICAL (line 22)",
        "policy.expedite.required_approvals: an expedited promotion needs more approvals than a normal one: "
        "1 is not more than staging's required_approvals 1 (line 25)",
    ]
    for gate, line in [
        ("immutable_tag", 12),
        ("digest_matches", 13),
        ("previous_environment_verified", 14),
        ("no_skipped_environment", 15),
        ("vulnerabilities", 16),
        ("sbom_present", 17),
    ]:
        expected.append(
            f"environments.production.checks.{gate}: {gate} cannot be switched off in production (the last environment)"
        )
        assert any(
            p.startswith(f"environments.production.checks.{gate}:") and p.endswith(f"(line {line})") for p in problems
        )
    for text in expected:
        assert any(
            text.split(" (line")[0] in p and (("(line" not in text) or text.split(" (line")[1] in p) for p in problems
        ), (text, joined)
    # what the model allows to be off stays allowed: soak and window in production, anything before it
    for allowed in ("checks.soak_time", "checks.deployment_window", "dev.checks", "staging.checks.soak_time"):
        assert allowed not in joined, allowed
    # reported in file order
    lines = [int(p.rsplit("(line ", 1)[1].rstrip(")")) for p in problems if "(line " in p]
    assert lines == sorted(lines)


def test_latest_is_always_a_mutable_tag_and_critical_always_blocks():
    config = parse_config(CONFIG.replace("policy:\n", "policy:\n  mutable_tags: [snapshot, Nightly]\n"))
    policy = config.policy
    assert policy.refused_tags == ["latest", "snapshot", "Nightly"]  # teams add names; latest is never removed
    assert policy.is_mutable("LATEST") and policy.is_mutable("nightly") and not policy.is_mutable("7a3f9c2")
    assert parse_config(CONFIG).policy.is_mutable("latest")
    assert "must include CRITICAL" in "\n".join(
        problems_of(CONFIG.replace("block_severities: [CRITICAL]", "block_severities: []"))
    )


def test_expedite_is_off_unless_configured_and_needs_its_own_approvers():
    assert parse_config(CONFIG).policy.expedite is None
    on = parse_config(
        CONFIG.replace("policy:\n", "policy:\n  expedite: {approvers: [U0ONCALL, S0SRE], required_approvals: 2}\n")
    )
    assert on.policy.expedite is not None and on.policy.expedite.required_approvals == 2
    bad = "\n".join(
        problems_of(CONFIG.replace("policy:\n", "policy:\n  expedite: {approvers: [], required_approvals: 2}\n"))
    )
    assert "policy.expedite.approvers:" in bad
    wrong = "\n".join(
        problems_of(CONFIG.replace("policy:\n", "policy:\n  expedite: {approvers: [oncall], required_approvals: 2}\n"))
    )
    assert "policy.expedite.approvers: not Slack user or user-group ids: oncall" in wrong


def test_config_validate_names_each_violation_with_its_line(tmp_path):
    path = tmp_path / "promobot.yml"
    path.write_text(CONFIGURED_AWAY)
    result = run_cli("config", "validate", str(path))
    assert result.returncode == 2
    err = result.stderr
    assert "invalid configuration" in err and "problem(s)" in err
    assert "environments.production.checks.digest_matches: digest_matches cannot be switched off in production" in err
    assert "(line 13)" in err and "environments.production.approvers: not Slack user or user-group ids: lead" in err
    assert "policy.block_severities: must include CRITICAL" in err
