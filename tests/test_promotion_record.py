"""The promotion record in the promotion model's exact shape, from GET /api/v1/promotions/{id} and from
`promobot audit export`, every one checked against the published JSON Schema
(docs/promotion-record.schema.json); statuses in the model's words."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session, select

from storage.models import Promotion
from tests.harness import TAG, deployed, production_dispatches, request_card, seed, valid_record, verified

ROOT = Path(__file__).resolve().parent.parent
OLD = "0c0ffee"
MODEL_FIELDS = [
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


async def until(predicate, timeout: float = 10.0):
    for _ in range(int(timeout / 0.05)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s")


def kind_of(h, dispatch: dict) -> str:
    with Session(h.bot.engine) as s:
        return s.get(Promotion, dispatch["inputs"]["promotion_id"]).kind


def status_of(h, pid: str) -> str:
    with Session(h.bot.engine) as s:
        return s.get(Promotion, pid).status


def card_id(card: dict) -> str:
    return next(el["value"] for b in card["blocks"] if b["type"] == "actions" for el in b["elements"])


async def record(h, pid: str) -> dict:
    status, body = await h.get(f"/api/v1/promotions/{pid}")
    assert status == 200, body
    assert list(body)[: len(MODEL_FIELDS)] == MODEL_FIELDS  # the model's names, in its order, extras after
    return valid_record(body)


async def test_records_say_success_rejected_expired_and_rolled_back_in_the_models_words(harness, database_url):
    h = harness
    await seed(h, tag=OLD, envs=("dev", "staging", "production"))
    build = await seed(h)

    # gate 1 moved TAG into staging by itself: nobody approved, the record says so
    with Session(h.bot.engine) as s:
        automatic = s.exec(
            select(Promotion).where(Promotion.tag == TAG, Promotion.target_environment == "staging")
        ).one()
    staging = await record(h, automatic.id)
    assert staging["status"] == "SUCCESS" and staging["approver"] is None and staging["approvers"] == []
    assert staging["verification_results"] == {"dev": "PASSED", "staging": "PASSED"}

    # rejected
    await request_card(h)
    rejected = card_id(h.cards()[-1])
    await h.user("U0LEAD").click(h.cards()[-1], "promotion.reject")
    view = (await h.wait(lambda s: s.calls("views.open")))[-1]["params"]["view"]
    await h.user("U0LEAD").submit_view(view, {"reason": {"value": {"type": "plain_text_input", "value": "not today"}}})
    await until(lambda: status_of(h, rejected) == "rejected")
    body = await record(h, rejected)
    assert (body["status"], body["reason"], body["promotion_approved_at"]) == ("REJECTED", "not today", None)
    assert body["promotion_completed_at"] and body["verification_results"] == {"staging": "PASSED"}

    # expired: nobody approved within approval_ttl
    await request_card(h)
    expired = card_id(h.cards()[-1])
    h.clock.fixed = datetime.now(UTC) + timedelta(hours=4, minutes=1)
    await until(lambda: status_of(h, expired) == "expired")
    h.clock.fixed = None
    assert (await record(h, expired))["status"] == "EXPIRED"

    # success, then rolled back by a verified rollback
    await request_card(h)
    await h.user("U0RM1").click(h.cards()[-1], "promotion.approve")
    dispatch = (await h.wait(lambda s: [d for d in production_dispatches(h) if d["inputs"]["image_tag"] == TAG]))[0]
    pid = dispatch["inputs"]["promotion_id"]
    await until(lambda: status_of(h, pid) == "dispatched")
    for event in (
        deployed("api-gateway", TAG, "production", run_id=str(dispatch["run_id"])),
        verified("api-gateway", TAG, "production"),
    ):
        assert (await h.event(event))[0] == 202
    await until(lambda: status_of(h, pid) == "verified")
    body = await record(h, pid)
    assert body["status"] == "SUCCESS" and body["rolled_back_by"] is None
    assert body["artifact"] == {
        "name": "api-gateway",
        "tag": TAG,
        "digest": build["digest"],
        "source_commit": build["commit_sha"],
    }
    assert body["approver"] == "U0RM1" and body["pipeline_run_id"] == str(dispatch["run_id"])
    assert body["verification_results"] == {"staging": "PASSED", "production": "PASSED"}
    assert body["promotion_requested_at"] <= body["promotion_approved_at"] <= body["promotion_completed_at"]

    roll = h.user("U0DEV")
    await roll.command("/rollback", "api-gateway in production error rate doubled")
    await h.wait(lambda s: roll.replies())
    card = [c for c in h.cards() if "Rollback" in c["blocks"][0]["text"]["text"]][-1]
    await h.user("U0LEAD").click(card, "promotion.approve")
    back = (await h.wait(lambda s: [d for d in production_dispatches(h) if kind_of(h, d) == "rollback"]))[0]
    rollback = back["inputs"]["promotion_id"]
    await until(lambda: status_of(h, rollback) == "dispatched")
    for event in (
        deployed("api-gateway", OLD, "production", run_id=str(back["run_id"])),
        verified("api-gateway", OLD, "production"),
    ):
        assert (await h.event(event))[0] == 202
    await until(lambda: status_of(h, rollback) == "verified")
    body = await record(h, pid)
    assert body["status"] == "ROLLED_BACK" and body["rolled_back_by"] == rollback
    assert body["promobot_status"] == "verified"  # promobot's own word is kept beside the model's
    back_record = await record(h, rollback)
    assert (back_record["kind"], back_record["source_environment"], back_record["status"]) == (
        "rollback",
        None,
        "SUCCESS",
    )
    assert back_record["reason"] == "error rate doubled" and back_record["verification_results"] == {
        "production": "PASSED"
    }

    # `promobot audit export` gives the same records, every one valid against the schema
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "SLACK_"))}
    env.update({"DATABASE_URL": database_url, "PROMOBOT_CONFIG": str(ROOT / "examples" / "promobot.yml")})
    for fmt in ("jsonl", "json"):
        out = subprocess.run(
            [sys.executable, "-m", "bot.cli", "audit", "export", "--format", fmt],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        exported = (
            [json.loads(x) for x in out.stdout.splitlines() if x.strip()] if fmt == "jsonl" else json.loads(out.stdout)
        )
        for item in exported:
            valid_record(item)
            assert list(item)[: len(MODEL_FIELDS)] == MODEL_FIELDS
        by_id = {r["promotion_id"]: r for r in exported}
        assert by_id[pid] == await record(h, pid)
        assert {by_id[x]["status"] for x in (rejected, expired, pid, rollback)} == {
            "REJECTED",
            "EXPIRED",
            "ROLLED_BACK",
            "SUCCESS",
        }
