"""The promobot composite action (.github/actions/promobot): valid action metadata, and its bash script run
against the real promobot server: reporting with retries under one event id, and authorizing a deploy
(the step fails with promobot's reason)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session, select

from storage.models import Artifact, Promotion, SbomReport, ScanReport
from tests.action_runner import ACTION, ACTION_DIR, ROOT, run_action
from tests.fakes.github_api import DEV
from tests.harness import API_TOKEN, TAG, artifact, dispatched, seed, service_unavailable
from tests.test_examples import _check_jsonschema

DIGEST = artifact("api-gateway", TAG)["digest"]


def connection(h) -> dict[str, str]:
    return {"promobot_url": h.base_url, "promobot_token": API_TOKEN}


def test_the_action_metadata_is_a_valid_composite_action():
    result = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.github-actions", str(ACTION_DIR / "action.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert ACTION["runs"]["using"] == "composite"
    [step] = ACTION["runs"]["steps"]
    assert step["shell"] == "bash" and step["run"] == 'bash "$GITHUB_ACTION_PATH/promobot.sh"'
    # every input reaches the script through env (composite actions get no INPUT_* of their own), and no
    # ${{ }} is expanded inside the script's source
    mapped = {value.strip("${} ").removeprefix("inputs.") for value in step["env"].values()}
    assert mapped == set(ACTION["inputs"]) and "${{" not in step["run"]
    assert all(spec.get("description") for spec in ACTION["inputs"].values())


@pytest.mark.parametrize("parsers", ["with jq and python3", "without parsers"])
def test_the_script_against_a_scripted_stub_covers_escaping_files_retries_and_refusals(parsers):
    """tests/action/test_promobot_sh.sh: the cases a real server cannot easily produce (429 with Retry-After,
    control characters, a byte-order mark, a 6 MB report, a missing parser)."""
    for tool in ("bash", "curl", "python3"):
        if not any(os.access(Path(d) / tool, os.X_OK) for d in os.environ["PATH"].split(os.pathsep)):
            service_unavailable(f"{tool} is not installed")
    env = {**os.environ, "NO_PARSERS": "1" if parsers == "without parsers" else "0"}
    result = subprocess.run(
        ["bash", str(ROOT / "tests" / "action" / "test_promobot_sh.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=170,
    )
    assert result.returncode == 0 and ", 0 failed" in result.stdout, result.stdout + result.stderr


async def test_reports_reach_the_bot_and_a_resend_with_the_same_event_id_is_a_duplicate(harness, tmp_path):
    h = harness
    h.github.add_commits("acme/api-gateway", "main", ["7a3f9c2" + "0" * 33])
    build = {**connection(h), "command": "report", "type": "artifact.built", "service": "api-gateway", "tag": TAG}
    build["digest"] = DIGEST
    before = datetime.now(UTC).replace(microsecond=0)
    first = await run_action(build, tmp_path=tmp_path)  # built_at defaults to now, resolved by the action
    assert first.code == 0, first.log
    assert first.outputs["http_status"] == "202" and '"result":"recorded"' in first.outputs["response"].replace(" ", "")
    assert first.outputs["event_id"].startswith("gha-4242-1-deploy-")
    with Session(h.bot.engine) as s:
        built = s.exec(select(Artifact)).one()
    assert (
        built.commit_sha == "7a3f9c2" + "0" * 33 and built.pipeline_run_id == "4242"
    )  # from GITHUB_SHA, GITHUB_RUN_ID
    assert before - timedelta(seconds=1) <= built.built_at <= datetime.now(UTC)
    # the same event sent again (a lost answer): a duplicate; the same id for other content: refused
    fixed = {**build, "event_id": "gha-build-1", "built_at": "2026-11-20T08:00:00Z"}
    assert (await run_action(fixed, tmp_path=tmp_path)).code == 0
    again = await run_action(fixed, tmp_path=tmp_path)
    assert again.code == 0 and '"result":"duplicate"' in again.outputs["response"].replace(" ", ""), again.log
    other = await run_action({**fixed, "built_at": "2026-11-21T08:00:00Z"}, tmp_path=tmp_path)
    assert other.code == 1 and "already used for a different artifact.built event" in other.stdout

    reports = ROOT / "examples" / "reports"
    for extra in (
        {"type": "scan.finished", "scanner": "trivy", "file": str(reports / "trivy-clean.json")},
        {"type": "sbom.published", "format": "cyclonedx", "file": str(reports / "sbom.cdx.json")},
    ):
        result = await run_action({**build, **extra}, tmp_path=tmp_path)
        assert result.code == 0 and result.outputs["http_status"] == "202", result.log
    with Session(h.bot.engine) as s:
        assert len(s.exec(select(ScanReport)).all()) == 1 and len(s.exec(select(SbomReport)).all()) == 1

    # refusals fail the step with promobot's words, and are never retried
    bad = await run_action({**build, "digest": "sha256:abc"}, tmp_path=tmp_path)
    assert bad.code == 1 and "::error title=promobot::promobot refused (400): invalid event" in bad.stdout
    assert "::error title=promobot::  digest: not an image digest" in bad.stdout and "retrying" not in bad.log
    denied = await run_action({**build, "promobot_token": "wrong-token"}, tmp_path=tmp_path)
    assert denied.code == 1 and "promobot refused (401): unauthorized" in denied.stdout
    assert API_TOKEN not in first.log + denied.log + str(first.outputs)


async def test_authorize_lets_the_dispatched_run_deploy_and_fails_the_step_of_any_other(harness, tmp_path):
    h = harness
    await seed(h)
    dispatch = await dispatched(h)
    inputs, run_id = dispatch["inputs"], str(dispatch["run_id"])
    step = {**connection(h), "command": "authorize", "service": "api-gateway", **inputs}
    step.pop("image_tag")
    step["environment"] = inputs["environment"]

    ok = await run_action(step, tmp_path=tmp_path, github={"GITHUB_RUN_ID": run_id})
    assert ok.code == 0, ok.log
    assert ok.outputs["authorized"] == "true" and ok.outputs["http_status"] == "200"

    by_hand = h.github.create_run(
        "acme/api-gateway", "deploy.yml", actor=DEV, display_title=f"[{inputs['promotion_id']}]"
    )
    refused = await run_action(step, tmp_path=tmp_path, github={"GITHUB_RUN_ID": str(by_hand)})
    assert refused.code == 1 and refused.outputs["authorized"] == "false"
    assert (
        f"::error title=promobot::promobot refused (403, deploy authorization): Deploy refused of {inputs['promotion_id']} "
        f"(wrong_actor): run {by_hand} was started by dev, not by promobot"
    ) in refused.stdout

    # a re-run of the allowed run is refused too
    h.github.rerun(dispatch["run_id"])
    rerun = await run_action(step, tmp_path=tmp_path, github={"GITHUB_RUN_ID": run_id, "GITHUB_RUN_ATTEMPT": "2"})
    assert rerun.code == 1 and "(rerun_attempt)" in rerun.stdout

    # the allowed run reports back through the action, naming its promotion and digest: the promotion moves
    for report in (
        {"type": "deployment.finished", "status": "success"},
        {"type": "verification.finished", "result": "passed", "checks": "smoke=passed\ne2e=passed"},
    ):
        result = await run_action(
            {
                **connection(h),
                "command": "report",
                "service": "api-gateway",
                "tag": inputs["image_tag"],
                "environment": "production",
                "promotion_id": inputs["promotion_id"],
                "image_digest": inputs["image_digest"],
                **report,
            },
            tmp_path=tmp_path,
            github={"GITHUB_RUN_ID": run_id},
        )
        assert result.code == 0 and '"result":"recorded"' in result.outputs["response"].replace(" ", ""), result.log
    with Session(h.bot.engine) as s:
        assert s.get(Promotion, inputs["promotion_id"]).status == "verified"


async def test_authorize_retries_while_github_cannot_answer_then_succeeds(harness, tmp_path):
    h = harness
    await seed(h)
    dispatch = await dispatched(h)
    h.github.fail_next(count=1, status=502, path_contains=f"/actions/runs/{dispatch['run_id']}")
    step = {**connection(h), "command": "authorize", "service": "api-gateway", **dispatch["inputs"]}
    result = await run_action(step, tmp_path=tmp_path, github={"GITHUB_RUN_ID": str(dispatch["run_id"])})
    assert result.code == 0 and result.outputs["authorized"] == "true", result.log
    assert "attempt 1 of 5 failed (promobot answered 503" in result.stderr and "retrying in 1.000s" in result.stderr


async def test_an_out_of_band_report_fails_the_step_naming_the_rule(harness, tmp_path):
    h = harness
    result = await run_action(
        {
            **connection(h),
            "command": "report",
            "type": "deployment.finished",
            "service": "api-gateway",
            "tag": TAG,
            "environment": "production",
            "status": "success",
        },
        tmp_path=tmp_path,
    )
    assert (
        result.code == 1
        and "promobot refused (409, out-of-band report): Out-of-band deployment refused" in result.stdout
    )


def test_the_action_is_documented_where_people_look():
    readme = (ROOT / "README.md").read_text()
    assert ".github/actions/promobot" in readme and "pinned" in readme.lower()
    assert yaml.safe_load((ACTION_DIR / "action.yml").read_text())["name"] == "promobot"
