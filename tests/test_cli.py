"""The `promobot` command as a new user meets it: the shell quickstart, `check`, `db upgrade`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.harness import valid_record

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "promobot.yml"


def promobot(*args: str, tmp_path: Path, stdin: str | None = None, env: dict | None = None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "SLACK_"))}
    environ.update(
        {"PROMOBOT_CONFIG": str(QUICKSTART), "DATABASE_URL": f"sqlite:///{tmp_path / 'promobot.db'}", **(env or {})}
    )
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


SESSION = """\
/status api-gateway
/promote api-gateway
press 1
as U0PLATFORMLEAD
press 1
press 1
event deployment.finished service=api-gateway tag=7a3f9c2 environment=production status=success
event verification.finished service=api-gateway tag=7a3f9c2 environment=production result=passed checks.smoke=passed
/promote api-gateway latest to production
/status api-gateway
"""


def test_shell_quickstart_promotes_to_production_with_a_dry_run_dispatch(tmp_path):
    result = promobot("shell", "--demo", "--user", "U0DEV", "--script", "-", tmp_path=tmp_path, stdin=SESSION)
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "dispatch: DRY RUN (no GitHub credentials)" in out
    assert "• *staging*: `7a3f9c2`" in out and "• *production*: `a1b2c3d`" in out
    assert "== Promotion: api-gateway → production · Waiting for approval ==" in out
    assert "[DM to U0PLATFORMLEAD]" in out
    # the requester pressing Approve is refused; the approver's press goes through; a second press changes nothing
    assert "You requested" in out and "cannot approve it" in out
    assert (
        "[dry run] would dispatch workflow_dispatch acme/api-gateway deploy.yml @ main with inputs: "
        "environment=production image_tag=7a3f9c2 image_digest=sha256:"
    ) in out
    assert "promotion_id=prm-" in out
    assert out.count("[dry run] would dispatch") == 1
    assert "202 verification.finished: recorded" in out
    assert "api-gateway → production · Verified" in out
    assert "`latest` is a mutable tag" in out
    assert "• *production*: `7a3f9c2`" in out.split("/status api-gateway")[-1]

    # the promotion is in the metrics, with its targets
    table = promobot("metrics", "--days", "30", tmp_path=tmp_path)
    assert table.returncode == 0 and "api-gateway  production" in table.stdout and "DORA (production)" in table.stdout
    report = json.loads(promobot("metrics", "--json", tmp_path=tmp_path).stdout)
    production = [m for m in report["promotions"] if m["environment"] == "production"]
    assert production[0]["completed"] == 1 and production[0]["rolled_back"] == 0


def test_check_exit_codes_and_json(tmp_path):
    promobot("shell", "--demo", "--script", "-", tmp_path=tmp_path, stdin="")
    eligible = promobot("check", "api-gateway", "7a3f9c2", "--env", "staging", "--json", tmp_path=tmp_path)
    assert eligible.returncode == 0, eligible.stdout + eligible.stderr
    report = json.loads(eligible.stdout)
    assert report["eligible"] is True and report["target_environment"] == "staging"
    # switched off where that is allowed: shown as off, never silently absent, and not blocking
    off = {g["gate"]: g for g in report["gates"] if g["status"] == "off"}
    assert set(off) == {"digest_matches", "source_commit_reachable"}
    assert "off by configuration (environments.staging.checks.digest_matches: false)" in off["digest_matches"]["reason"]
    # production's digest gate cannot be off: with no registry to ask (the demo's is in memory) it cannot
    # verify, and "could not verify" blocks with exit 2
    unverified = promobot("check", "api-gateway", "7a3f9c2", "--env", "production", tmp_path=tmp_path)
    assert unverified.returncode == 2, unverified.stdout + unverified.stderr
    assert "[ERR ] Digest matches: could not verify digest" in unverified.stdout
    assert "[OFF ] Source commit reachable: off by configuration" in unverified.stdout
    blocked = promobot("check", "api-gateway", "a1b2c3d", "--env", "production", tmp_path=tmp_path)
    assert blocked.returncode == 1
    assert "BLOCKED" in blocked.stdout and "[FAIL] No skipped environment" in blocked.stdout
    unknown = promobot("check", "api-gatewy", "7a3f9c2", tmp_path=tmp_path)
    assert unknown.returncode == 2 and "did you mean `api-gateway`" in unknown.stderr


def test_db_upgrade_applies_the_migrations(tmp_path):
    result = promobot("db", "upgrade", tmp_path=tmp_path)
    assert result.returncode == 0 and "schema at revision" in result.stdout
    assert (tmp_path / "promobot.db").exists()


def test_manifest_declares_what_the_bot_listens_to_and_only_the_scopes_it_uses():
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    commands = {c["command"] for c in manifest["features"]["slash_commands"]}
    assert commands == {"/promote", "/rollback", "/status"}
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True
    source = (ROOT / "handlers" / "slack_app.py").read_text()
    for command in commands:
        assert f'@app.command("{command}")' in source
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "commands",
        "chat:write",
        "usergroups:read",
        "files:write",
        "files:read",
        "channels:history",
        "groups:history",
    }


# What each Slack Web API method needs (api.slack.com/methods); None: no scope.
METHOD_SCOPES = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "usergroups.users.list": "usergroups:read",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "files.list": "files:read",
    "conversations.history": "channels:history",
    "views.open": None,
    "views.publish": None,
    "views.update": None,
    "chat.getPermalink": None,
    "auth.test": None,
}


async def test_a_whole_promotion_calls_only_methods_the_manifest_allows(harness):
    from tests.harness import production_dispatches, request_card, seed

    h = harness
    await seed(h)
    await request_card(h)
    await h.user("U0LEAD").click(h.cards()[-1], "promotion.reject")
    await h.wait(lambda s: s.calls("views.open"))
    await request_card(h)
    await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
    await h.wait(lambda s: production_dispatches(h))
    scopes = set(yaml.safe_load((ROOT / "manifest.yml").read_text())["oauth_config"]["scopes"]["bot"])
    called = {c["method"] for c in h.slack.calls()}
    assert {"chat.postMessage", "chat.update", "usergroups.users.list", "views.open"} <= called
    for method in called:
        assert method in METHOD_SCOPES, f"{method}: unknown to this test; add its scope"
        assert METHOD_SCOPES[method] in scopes | {None}, f"{method} needs {METHOD_SCOPES[method]}"


def test_audit_verify_and_export_after_a_promotion(tmp_path):
    session = "/promote api-gateway\nas U0PLATFORMLEAD\npress 1\n"
    assert (
        promobot("shell", "--demo", "--user", "U0DEV", "--script", "-", tmp_path=tmp_path, stdin=session).returncode
        == 0
    )
    verify = promobot("audit", "verify", tmp_path=tmp_path)
    assert verify.returncode == 0 and "audit chain intact" in verify.stdout, verify.stdout + verify.stderr
    assert "unkeyed SHA-256 chain" in verify.stdout
    # from now on the chain is keyed: new events need the key, and verify says how it checked
    key = {"PROMOBOT_AUDIT_KEY": "a-long-random-secret"}
    lock = "/promote lock api-gateway production trying the key\n"
    promobot("shell", "--user", "U0DEV", "--script", "-", tmp_path=tmp_path, stdin=lock, env=key)
    keyed = promobot("audit", "verify", tmp_path=tmp_path, env=key)
    assert keyed.returncode == 0 and "keyed HMAC-SHA256 chain from event" in keyed.stdout, keyed.stdout
    assert "a-long-random-secret" not in keyed.stdout + keyed.stderr
    unkeyed = promobot("audit", "verify", tmp_path=tmp_path)
    assert unkeyed.returncode == 2 and "set PROMOBOT_AUDIT_KEY" in unkeyed.stdout, unkeyed.stdout
    export = promobot("audit", "export", "--format", "jsonl", tmp_path=tmp_path)
    records = [valid_record(json.loads(line)) for line in export.stdout.splitlines() if line.strip()]
    by_tag = {r["artifact"]["tag"]: r for r in records if r["target_environment"] == "production"}
    # the demo's history reached production through a promotion too, six weeks ago
    assert set(by_tag) == {"7a3f9c2", "a1b2c3d"} and by_tag["a1b2c3d"]["status"] == "SUCCESS"
    assert by_tag["a1b2c3d"]["promotion_requested_at"] < by_tag["7a3f9c2"]["promotion_requested_at"]
    production = [by_tag["7a3f9c2"]]
    assert production[0]["status"] == "DEPLOYING"  # dispatched, not yet deployed
    assert production[0]["promobot_status"] == "dispatched"
    assert production[0]["approver"] == "U0PLATFORMLEAD" and production[0]["artifact"]["tag"] == "7a3f9c2"
    # the model's fields first, in its order
    assert list(production[0])[:11] == [
        "promotion_id",
        "artifact",
        "source_environment",
        "target_environment",
        "promotion_requested_at",
        "promotion_approved_at",
        "promotion_completed_at",
        "approver",
        "pipeline_run_id",
        "verification_results",
        "status",
    ]
    assert production[0]["verification_results"] == {"staging": "PASSED"}  # production's own is not in yet
    # an edited event is named by verify
    import sqlite3

    with sqlite3.connect(tmp_path / "promobot.db") as db:
        db.execute("UPDATE auditevent SET actor = 'U0MALLORY' WHERE seq = 3")
    broken = promobot("audit", "verify", tmp_path=tmp_path)
    assert broken.returncode == 1 and "audit chain BROKEN at event 3" in broken.stdout, broken.stdout
