"""The pipeline event API and `promobot report`: validation, idempotency, tag mutation, auth."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sqlmodel import Session, select

from storage.models import Artifact, AuditEvent, Deployment
from tests.harness import API_TOKEN, artifact, deployed

ROOT = Path(__file__).resolve().parent.parent


async def test_every_bad_field_is_named_and_nothing_is_recorded(harness):
    h = harness
    status, body = await h.event(
        {
            "type": "artifact.built",
            "service": "api-gatewy",
            "tag": "bad tag!",
            "digest": "md5:abc",
            "commit_sha": "XYZ",
            "built_at": "2026-11-26T10:00:00",
            "colour": "blue",
        }
    )
    assert status == 400 and body["error"] == "invalid event"
    problems = "\n".join(body["problems"])
    for expected in (
        "tag: not a valid image tag",
        "digest: not an image digest",
        "commit_sha: not a commit SHA",
        "pipeline_run_id: field required",
        "built_at: needs a time zone",
        "colour: unknown field",
        "service: unknown service 'api-gatewy'",
    ):
        assert expected in problems, problems
    status, body = await h.event(
        {
            "type": "deployment.finished",
            "service": "api-gateway",
            "tag": "7a3f9c2",
            "environment": "prod",
            "status": "done",
        }
    )
    assert status == 400
    assert any(p.startswith("status: Input should be 'success' or 'failure'") for p in body["problems"])
    assert any("unknown environment 'prod'" in p for p in body["problems"])
    status, body = await h.event({"type": "artifact.exploded"})
    assert status == 400 and "type: must be one of artifact.built" in body["problems"][0]
    with Session(h.bot.engine) as s:
        assert s.exec(select(Artifact)).all() == [] and s.exec(select(AuditEvent)).all() == []


async def test_tokens_are_required(harness):
    h = harness
    assert (await h.event(artifact("api-gateway", "7a3f9c2"), token=None))[0] == 401
    assert (await h.event(artifact("api-gateway", "7a3f9c2"), token="wrong"))[0] == 401
    assert (await h.get("/api/v1/promotions/prm-x", token=None))[0] == 401
    assert (await h.get("/api/v1/eligibility?service=api-gateway", token="wrong"))[0] == 401


async def test_a_resend_with_the_same_event_id_changes_nothing(harness):
    h = harness
    event = {**deployed("api-gateway", "7a3f9c2", "dev"), "event_id": "run-77-deploy"}
    assert await h.event(event) == (202, {"status": "accepted", "result": "recorded", "type": "deployment.finished"})
    assert (await h.event(event))[1]["result"] == "duplicate"
    status, body = await h.event({**event, "status": "failure"})
    assert status == 409 and "already used for a different" in body["error"]
    with Session(h.bot.engine) as s:
        assert len(s.exec(select(Deployment)).all()) == 1


async def test_a_resent_event_whose_time_is_now_is_a_duplicate_not_a_conflict(harness):
    """`built_at: now` is resolved by the bot; a resend of the very same body after a lost answer is
    the same event, so the idempotency check compares the body as it was sent."""
    h = harness
    event = {**artifact("api-gateway", "7a3f9c2", built_at="now"), "event_id": "build-99-artifact"}
    assert (await h.event(event))[1]["result"] == "recorded"
    await asyncio.sleep(0.01)  # the bot's clock moves on between the two sends
    assert await h.event(event) == (202, {"status": "accepted", "result": "duplicate", "type": "artifact.built"})
    status, body = await h.event({**event, "digest": "sha256:" + "e" * 64})
    assert status == 409 and "already used for a different" in body["error"]
    with Session(h.bot.engine) as s:
        assert len(s.exec(select(Artifact)).all()) == 1


def test_promobot_report_resolves_now_once_before_the_first_try():
    """Every try sends the same bytes: `--built-at now` becomes the client's UTC time when the event
    is built, not a word the bot turns into its own time on each try."""
    from datetime import UTC, datetime

    from bot.cli import _report_event, parser

    args = parser().parse_args(
        ["report", "artifact.built", "--service", "api-gateway", "--tag", "7a3f9c2", "--built-at", "now"]
    )
    before = datetime.now(UTC)
    event = _report_event(args)
    built = datetime.fromisoformat(event["built_at"])
    assert built.tzinfo is not None and before.replace(microsecond=0) <= built <= datetime.now(UTC)
    deploy = parser().parse_args(
        ["report", "deployment.finished", "--service", "a", "--tag", "t", "--finished-at", "NOW"]
    )
    assert _report_event(deploy)["finished_at"] != "NOW"


async def test_a_second_digest_for_a_tag_is_a_tag_mutation(harness):
    h = harness
    assert (await h.event(artifact("api-gateway", "7a3f9c2")))[0] == 202
    assert (await h.event(artifact("api-gateway", "7a3f9c2")))[1]["result"] == "unchanged"
    status, body = await h.event(artifact("api-gateway", "7a3f9c2", digest="sha256:" + "f" * 64))
    assert status == 409 and body["rule"] == "tag mutation"
    alert = await h.wait(lambda s: [m for m in s.messages("C0DEPLOYS") if "Tag mutation refused" in m["text"]])
    assert "sha256:" + "f" * 64 in alert[0]["text"]
    with Session(h.bot.engine) as s:
        assert [a.digest for a in s.exec(select(Artifact))] == [artifact("api-gateway", "7a3f9c2")["digest"]]
        assert "artifact.tag_mutation" in [e.action for e in s.exec(select(AuditEvent))]


async def test_reports_over_the_size_limit_are_refused_clearly(harness):
    h = harness
    big = {
        "type": "scan.finished",
        "service": "api-gateway",
        "tag": "7a3f9c2",
        "scanner": "trivy",
        "report": {"Results": [{"Target": "x" * (11 * 1024 * 1024)}]},
    }
    status, body = await h.event(big)
    assert status == 413 and "event too large" in body["error"] and "10 MB" in body["error"]
    # a several-MB report is fine
    results = [
        {
            "Target": f"layer{i}",
            "Vulnerabilities": [
                {
                    "VulnerabilityID": f"CVE-2020-{i:05d}",
                    "PkgName": "pkg",
                    "InstalledVersion": "1",
                    "Severity": "LOW",
                    "Title": "t" * 200,
                }
            ],
        }
        for i in range(12000)
    ]
    status, body = await h.event({**big, "report": {"SchemaVersion": 2, "Results": results}})
    assert status == 202, body


async def test_a_malformed_scanner_report_is_a_400_naming_the_place(harness):
    h = harness
    status, body = await h.event(
        {
            "type": "scan.finished",
            "service": "api-gateway",
            "tag": "7a3f9c2",
            "scanner": "trivy",
            "report": {"Results": [{"Vulnerabilities": [{}]}]},
        }
    )
    assert status == 400 and body["problems"][0].startswith("report: trivy report: Results[0]")


async def _report_cli(h, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "report",
        *args,
        "--url",
        h.base_url,
        "--retries",
        "0",
        cwd=ROOT,
        env={**os.environ, "PROMOBOT_API_TOKEN": API_TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_promobot_report_sends_events_from_a_pipeline(harness):
    h = harness
    code, out, err = await _report_cli(
        h,
        "artifact.built",
        "--service",
        "api-gateway",
        "--tag",
        "7a3f9c2",
        "--digest",
        "sha256:" + "a" * 64,
        "--commit-sha",
        "7a3f9c2" + "0" * 33,
        "--pipeline-run-id",
        "99",
        "--built-at",
        "now",
    )
    assert code == 0 and out.startswith("202"), err
    code, out, err = await _report_cli(
        h,
        "scan.finished",
        "--service",
        "api-gateway",
        "--tag",
        "7a3f9c2",
        "--scanner",
        "trivy",
        "--report-file",
        str(ROOT / "tests/fixtures/trivy/trivy-alpine-3.9-high-critical.json"),
    )
    assert code == 0, err
    code, out, err = await _report_cli(
        h,
        "verification.finished",
        "--service",
        "api-gateway",
        "--tag",
        "7a3f9c2",
        "--environment",
        "dev",
        "--result",
        "passed",
        "--check",
        "smoke=passed",
    )
    assert code == 0, err
    code, out, err = await _report_cli(
        h,
        "deployment.finished",
        "--service",
        "api-gateway",
        "--tag",
        "7a3f9c2",
        "--environment",
        "dev",
        "--status",
        "maybe",
    )
    assert code == 1 and "status: Input should be 'success' or 'failure'" in err
    with Session(h.bot.engine) as s:
        actions = [e.action for e in s.exec(select(AuditEvent).order_by(AuditEvent.seq))]
    assert actions[:3] == ["artifact.built", "scan.finished", "verification.finished"]
