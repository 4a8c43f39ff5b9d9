"""Rolling back during an incident: a bad deploy is deployed and still awaits its verification (which can
take the whole verification deadline, 1 h by default). ``/rollback`` is possible at once, and approving it
ends the wait for the bad promotion's verification. Through the real server, with Slack's signed requests."""

from __future__ import annotations

import asyncio

from sqlmodel import Session, select

from storage.models import ActivePromotion, Artifact, AuditEvent, Promotion
from tests.harness import (
    TAG,
    all_text,
    deployed,
    header_text,
    production_dispatches,
    request_card,
    seed,
    valid_record,
    verified,
)

OLD = "0c0ffee"  # known good in production


async def until(predicate, timeout: float = 10.0):
    for _ in range(int(timeout / 0.05)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s")


def promotion(h, pid: str) -> Promotion:
    with Session(h.bot.engine) as s:
        return s.get(Promotion, pid)


def trail(h, pid: str) -> list[str]:
    with Session(h.bot.engine) as s:
        return [
            e.action for e in s.exec(select(AuditEvent).where(AuditEvent.promotion_id == pid).order_by(AuditEvent.seq))
        ]


async def reply_to(h, user: str, command: str, text: str) -> dict:
    person = h.user(user)
    await person.command(command, text)
    return (await h.wait(lambda s: person.replies()))[0]


def rollback_dispatches(h) -> list[dict]:
    """Production dispatches of rollbacks (seeding OLD dispatched a promotion of it there too)."""
    return [d for d in production_dispatches(h) if promotion(h, d["inputs"]["promotion_id"]).kind == "rollback"]


def rollback_cards(h) -> list[dict]:
    return [c for c in h.cards() if header_text(c).startswith("Rollback")]


async def bad_deploy_awaiting_verification(h) -> tuple[str, dict]:
    """OLD verified in production; TAG promoted, approved, dispatched and deployed, its verification pending."""
    await seed(h, tag=OLD, envs=("dev", "staging", "production"))
    await seed(h)
    await request_card(h)
    await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
    dispatch = (await h.wait(lambda s: [d for d in production_dispatches(h) if d["inputs"]["image_tag"] == TAG]))[0]
    pid = dispatch["inputs"]["promotion_id"]
    await until(lambda: promotion(h, pid).status == "dispatched")
    # while the deploy runs, a rollback would race it: refused, saying what to do and when
    racing = all_text(await reply_to(h, "U0DEV", "/rollback", "api-gateway in production"))
    assert "a rollback now would race it" in racing and "As soon as it is deployed" in racing
    assert (await h.event(deployed("api-gateway", TAG, "production", run_id=str(dispatch["run_id"]))))[0] == 202
    await until(lambda: promotion(h, pid).status == "deployed")
    return pid, dispatch


async def test_a_rollback_during_verification_is_possible_and_its_approval_ends_the_wait(harness):
    h = harness
    bad, _ = await bad_deploy_awaiting_verification(h)

    reply = await reply_to(h, "U0DEV", "/rollback", "api-gateway in production error rate doubled")
    assert "Requested rollback" in reply["text"], reply["text"]
    card = rollback_cards(h)[-1]
    assert header_text(card) == "Rollback: api-gateway → production · Waiting for approval"
    assert f"`{bad}` is deployed and still awaits its verification: approving this rollback ends that wait" in (
        all_text(card)
    )
    rollback = next(el["value"] for b in card["blocks"] if b["type"] == "actions" for el in b["elements"])
    assert promotion(h, bad).status == "deployed"  # requesting changes nothing yet
    assert trail(h, bad)[-1] == "promotion.rollback_requested"
    # while it waits, no normal promotion may take the environment
    blocked = all_text(await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG} to production"))
    assert f"Rollback `{rollback}`" in blocked and "only another rollback may take its place" in blocked

    await h.user("U0RM1").click(card, "promotion.approve")
    back = (await h.wait(lambda s: rollback_dispatches(h)))[0]
    assert back["inputs"]["promotion_id"] == rollback
    ended = promotion(h, bad)
    assert ended.status == "failed" and ended.reason == f"rolled back by {rollback} before its verification finished"
    assert trail(h, bad)[-1] == "promotion.preempted" and "rollback.automatic" not in trail(h, bad)
    bad_card = next(c for c in h.cards() if bad in all_text(c))
    await h.wait(
        lambda s: any(
            m.get("thread_ts") == bad_card["ts"] and f"Rolled back by `{rollback}`" in m["text"]
            for m in s.messages("C0DEPLOYS")
        )
    )

    # the bad deploy's late verification is recorded but moves nothing, and asks for no second rollback
    assert (await h.event(verified("api-gateway", TAG, "production", result="failed", checks={})))[0] == 202
    await asyncio.sleep(0.7)  # a tracking pass runs meanwhile
    assert promotion(h, bad).status == "failed"
    with Session(h.bot.engine) as s:
        assert [p.id for p in s.exec(select(Promotion).where(Promotion.kind == "rollback"))] == [rollback]

    # the rollback completes; the bad artifact goes on hold; its record says it was rolled back
    await until(lambda: promotion(h, rollback).status == "dispatched")
    for event in (
        deployed("api-gateway", OLD, "production", run_id=str(back["run_id"])),
        verified("api-gateway", OLD, "production"),
    ):
        assert (await h.event(event))[0] == 202
    await until(lambda: promotion(h, rollback).status == "verified")
    with Session(h.bot.engine) as s:
        assert s.exec(select(Artifact.hold_reason).where(Artifact.tag == TAG)).one()
        assert s.exec(select(ActivePromotion)).all() == [] or all(
            a.environment != "production" for a in s.exec(select(ActivePromotion))
        )
    status, record = await h.get(f"/api/v1/promotions/{bad}")
    assert status == 200
    valid_record(record)
    assert record["status"] == "ROLLED_BACK" and record["rolled_back_by"] == rollback
    # production's verification did not decide it (it was rolled back first), but the late report is the
    # verification of the deployment it made, so its record shows it
    assert record["verification_results"] == {"staging": "PASSED", "production": "FAILED"}
    _, back_record = await h.get(f"/api/v1/promotions/{rollback}")
    assert valid_record(back_record)["status"] == "SUCCESS" and back_record["kind"] == "rollback"


async def test_a_rejected_rollback_gives_the_deploy_back_its_wait_and_a_failure_asks_for_no_second_rollback(harness):
    h = harness
    bad, _ = await bad_deploy_awaiting_verification(h)
    await reply_to(h, "U0DEV", "/rollback", "api-gateway in production looks slow")
    card = rollback_cards(h)[-1]
    first = next(el["value"] for b in card["blocks"] if b["type"] == "actions" for el in b["elements"])

    # rejected: the deploy holds its environment again and is followed as before
    await h.user("U0LEAD").click(card, "promotion.reject")
    view = (await h.wait(lambda s: s.calls("views.open")))[-1]["params"]["view"]
    await h.user("U0LEAD").submit_view(
        view, {"reason": {"value": {"type": "plain_text_input", "value": "latency is the CDN, not the deploy"}}}
    )
    await until(lambda: promotion(h, first).status == "rejected")
    with Session(h.bot.engine) as s:
        assert s.get(ActivePromotion, ("api-gateway", "production")).promotion_id == bad
    assert promotion(h, bad).status == "deployed"

    # asked again; then the deploy's own verification fails while the rollback waits: the deploy fails, and
    # promobot asks for no second rollback, it points at the one waiting
    await reply_to(h, "U0RM1", "/rollback", "api-gateway in production errors now")
    second = next(
        el["value"] for b in rollback_cards(h)[-1]["blocks"] if b["type"] == "actions" for el in b["elements"]
    )
    assert second != first
    assert (await h.event(verified("api-gateway", TAG, "production", result="failed", checks={"smoke": "failed"})))[
        0
    ] == 202
    await until(lambda: promotion(h, bad).status == "failed")
    assert promotion(h, bad).reason == "verification failed"
    await until(lambda: "rollback.automatic" in trail(h, bad))
    with Session(h.bot.engine) as s:
        automatic = s.exec(
            select(AuditEvent).where(AuditEvent.promotion_id == bad, AuditEvent.action == "rollback.automatic")
        ).one()
        rollbacks = [p.id for p in s.exec(select(Promotion).where(Promotion.kind == "rollback"))]
    assert automatic.detail["rollback_id"] == second and automatic.detail["already_requested"] is True
    assert sorted(rollbacks) == sorted([first, second])
    assert promotion(h, second).status == "pending_approval"


async def test_a_rollback_voided_right_before_dispatch_after_ending_the_wait_alerts_the_approvers(harness):
    h = harness
    bad, _ = await bad_deploy_awaiting_verification(h)
    await reply_to(h, "U0DEV", "/rollback", "api-gateway in production error rate doubled")
    card = rollback_cards(h)[-1]
    rollback = next(el["value"] for b in card["blocks"] if b["type"] == "actions" for el in b["elements"])
    h.github.fail_next(count=1000, status=502, path_contains="/dispatches")  # GitHub cannot take it yet
    await h.user("U0RM1").click(card, "promotion.approve")
    await until(lambda: promotion(h, bad).status == "failed")  # the approval ended the deploy's wait
    # while the dispatch waits for GitHub, someone locks production: the check right before dispatch voids it
    await reply_to(h, "U0RM2", "/promote", "lock api-gateway production investigating the rollback itself")
    await until(lambda: promotion(h, rollback).status == "voided", timeout=20)
    alert = (
        await h.wait(
            lambda s: [m for m in s.messages("C0DEPLOYS") if "was voided right before dispatch" in m["text"]],
            timeout=10,
        )
    )[0]["text"]
    assert f"after its approval had ended `{bad}`'s wait" in alert and f"still runs `{TAG}`" in alert
    assert "<@U0LEAD> <!subteam^S0RELEASE>" in alert
    await h.wait(lambda s: [m for m in s.messages("U0LEAD") if "was voided right before dispatch" in m["text"]])
    assert not rollback_dispatches(h)
