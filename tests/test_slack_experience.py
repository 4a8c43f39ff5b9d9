"""The Slack experience, through signed requests against the real app: approval cards worth
trusting, N-of-M approvals and revoking, supersede and expiry, rollbacks and holds, locks,
help, and escaping of everything people type.

Assertions look at the blocks the Slack stand-in received and at what changed in storage.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from storage.models import ActivePromotion, Approval, Artifact, EnvironmentLock
from tests.harness import (
    CONFIG,
    TAG,
    ago,
    all_text,
    artifact,
    audit_actions,
    card_id,
    card_update,
    deployed,
    header_text,
    in_thread,
    production_dispatches,
    promotion,
    recorded_dispatch,
    request_card,
    seed,
    through_promotion,
    verified,
)

OLD = "a1b2c3d"  # what production ran before TAG
BAD = "0badf00"  # a deploy to production that failed before OLD
REPO = "acme/api-gateway"
INJECTION = "<!channel> <@U0EVIL> *bold* `tick"


# --- helpers ------------------------------------------------------------------------------


def text_objects(blocks: list[dict]) -> list[dict]:
    """Every text object ({type, text}) in the blocks, nested ones too."""
    found: list[dict] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return found


def section_with(message: dict, needle: str) -> str:
    """The text of the first section (text or field) that contains ``needle``."""
    for obj in text_objects(message["blocks"]):
        if needle in obj["text"]:
            return obj["text"]
    raise AssertionError(f"no text object contains {needle!r}:\n{all_text(message)}")


def buttons(message: dict) -> list[str]:
    return [el["action_id"] for b in message["blocks"] if b["type"] == "actions" for el in b["elements"]]


def assert_within_slack_limits(blocks: list[dict], max_blocks: int = 50) -> None:
    assert len(blocks) <= max_blocks
    for b in blocks:
        if b["type"] == "section":
            assert len((b.get("text") or {}).get("text", "")) <= 3000
            assert len(b.get("fields") or []) <= 10


def assert_no_injection(messages: list[dict]) -> None:
    """Nothing a person typed became a mention, a broadcast or formatting."""
    for m in messages:
        for text in [m.get("text") or ""] + [o["text"] for o in text_objects(m.get("blocks") or [])]:
            assert "<!channel>" not in text and "<@U0EVIL>" not in text, text
        mrkdwn = [m.get("text") or ""] + [
            o["text"] for o in text_objects(m.get("blocks") or []) if o["type"] == "mrkdwn"
        ]
        for text in mrkdwn:
            # *bold* typed by a person may appear only inside an inline code span
            for hit in re.finditer(re.escape("*bold*"), text):
                assert text[: hit.start()].count("`") % 2 == 1, text


def everything_posted(h) -> list[dict]:
    return h.slack.messages() + h.slack.updates() + h.slack.responses()


async def reply_to(h, user: str, command: str, text: str) -> dict:
    person = h.user(user)
    await person.command(command, text)
    return (await h.wait(lambda s: person.replies()))[0]


def sha(tag: str) -> str:
    return (tag + "0" * 40)[:40]


async def production_history(h) -> None:
    """OLD built, scanned and running verified in production for days; an older failed deploy before it.
    Each got there the one way anything does: a promotion promobot dispatched, whose run reported back."""
    await seed(h, tag=BAD)
    await through_promotion(h, BAD, "production", status="failure", deployed_at=ago(days=5))
    await seed(h, tag=OLD)
    await through_promotion(h, OLD, "production", deployed_at=ago(days=3), verified_at=ago(days=3, minutes=-20))


# --- the approval card --------------------------------------------------------------------


async def test_card_shows_changes_previous_environment_stability_soak_window_and_approvals(harness):
    h = harness
    await production_history(h)
    middle = [f"{i:x}" * 40 for i in range(1, 10)]
    messages = [f"Fix retry loop in client (#{10 + i})" for i in range(7)] + [
        "Merge pull request #31 from acme/rate-limit\n\nAdd rate limiting",
        "Tidy imports",
    ]
    h.github.add_commits(REPO, "main", [sha(OLD)] + middle, ["Old release"] + messages)
    await seed(h)  # TAG: built, verified in dev and staging; its commit follows the nine above
    await request_card(h)
    card = h.cards()[-1]
    assert_within_slack_limits(card["blocks"])

    changes = section_with(card, "Changes since")
    assert f"*Changes since `{OLD}`* in production: 10 commit(s)" in changes
    assert f"<https://github.com/{REPO}/compare/{sha(OLD)}...{sha(TAG)}|compare>" in changes
    assert f"<https://github.com/{REPO}/commit/{sha(TAG)}|`{TAG}`>" in changes  # newest first
    assert f"Add rate limiting (<https://github.com/{REPO}/pull/31|#31>) — dev" in changes
    assert f"(<https://github.com/{REPO}/pull/15|#15>)" in changes
    assert "…and 2 more" in changes and "#10" not in changes  # capped at 8 lines

    previous = section_with(card, f"`{TAG}` in staging")
    assert "deployment success 7 h ago" in previous and "verification passed 7 h ago (smoke passed)" in previous
    recent = section_with(card, "Recent production")
    assert f"`{OLD}` verification passed" in recent and "`0badf00` deployment failure 5 days ago" in recent

    assert re.search(r"\*Soak\*\n:white_check_mark: 7h( \d+m)? in staging \(needs 1h\)", all_text(card))
    assert "*Window (production)*\nno window: any time" in all_text(card)
    assert section_with(card, "*Approvals*") == (
        "*Approvals*\n0 of 1\nwaiting for 1 more from <@U0LEAD>, <!subteam^S0RELEASE>"
    )
    assert "*Expires*\n" in all_text(card)
    assert re.search(rf"\*Replaces\*\n`{OLD}` `sha256:[0-9a-f]{{12}}`", all_text(card))
    assert "Artifact hold*: `7a3f9c2` is not on hold" in all_text(card)
    assert buttons(card) == ["promotion.approve", "promotion.reject", "promotion.cancel"]
    approve = next(el for b in card["blocks"] if b["type"] == "actions" for el in b["elements"])
    assert approve["confirm"]["title"]["text"] == "Approve this promotion?"


@pytest.mark.parametrize("config_text", [CONFIG.replace("required_approvals: 1", "required_approvals: 2")])
async def test_two_of_m_approvals_can_be_revoked_until_dispatch(harness):
    h = harness
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    pid = card_id(card)

    await h.user("U0RM1").click(card, "promotion.approve")
    one = await card_update(h, card, lambda u: "1 of 2" in all_text(u))
    assert "*Approvals*\n1 of 2: <@U0RM1>\nwaiting for 1 more from" in all_text(one)
    assert buttons(one) == ["promotion.approve", "promotion.reject", "promotion.cancel", "promotion.revoke"]
    await in_thread(h, card, "<@U0RM1> approved (1 of 2)")

    # someone who has not approved has nothing to revoke
    stranger = h.user("U0LEAD")
    await stranger.click(one, "promotion.revoke")
    assert "You have not approved" in (await h.wait(lambda s: stranger.replies()))[0]["text"]

    # the approver takes it back: the count goes down, the button goes away, storage and audit say so
    rm1 = h.user("U0RM1")
    await rm1.click(one, "promotion.revoke")
    assert "is revoked: 0 of 2" in (await h.wait(lambda s: rm1.replies()))[0]["text"]
    zero = await card_update(h, card, lambda u: "revoke" not in " ".join(buttons(u)) and "0 of 2" in all_text(u))
    assert "Waiting for approval" in header_text(zero)
    await in_thread(h, card, "<@U0RM1> revoked their approval (0 of 2)")
    with Session(h.bot.engine) as s:
        assert s.exec(select(Approval).where(Approval.promotion_id == pid)).all() == []
    assert ("promotion.approval_revoked", "U0RM1") in audit_actions(h, promotion_id=pid)

    # two approvals dispatch; after that, revoking is refused with what to do instead
    await h.user("U0RM1").click(zero, "promotion.approve")
    await card_update(h, card, lambda u: "1 of 2" in all_text(u))
    await h.user("U0LEAD").click(zero, "promotion.approve")
    await recorded_dispatch(h)  # (GitHub has the dispatch a moment before promobot records it)
    reply = await reply_to(h, "U0RM1", "/promote", f"revoke {pid}")
    assert "revoking cannot undo a deploy" in reply["text"] and "/rollback api-gateway in production" in reply["text"]
    assert promotion(h, pid).status in ("dispatched", "deployed")
    assert len(production_dispatches(h)) == 1


@pytest.mark.parametrize("config_text", [CONFIG.replace("required_approvals: 1", "required_approvals: 2")])
async def test_an_approval_clicked_after_the_requester_cancelled_is_refused_and_not_recorded(harness):
    """promobot remembers what an approval needs of a promotion it has seen waiting; whether it still waits
    is asked again at every click."""
    h = harness
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    pid = card_id(card)
    await h.user("U0RM1").click(card, "promotion.approve")
    one = await card_update(h, card, lambda u: "1 of 2" in all_text(u))

    dev = h.user("U0DEV")
    await dev.click(one, "promotion.cancel")
    await h.wait(lambda s: promotion(h, pid).status == "cancelled")
    lead = h.user("U0LEAD")
    await lead.click(one, "promotion.approve")

    answer = (await h.wait(lambda s: lead.replies()))[0]["text"]
    assert answer == f"`{pid}` is cancelled by <@U0DEV>; nothing changed."
    with Session(h.bot.engine) as s:
        assert [a.approver for a in s.exec(select(Approval).where(Approval.promotion_id == pid)).all()] == ["U0RM1"]
    assert ("promotion.approval", "U0LEAD") not in audit_actions(h, promotion_id=pid)
    assert not production_dispatches(h)


async def test_a_newer_request_supersedes_the_pending_one_and_the_old_card_says_by_which(harness):
    h = harness
    await seed(h)
    await request_card(h)
    old_card = h.cards()[-1]
    old_id = card_id(old_card)
    newer = "9e8d7c6"
    await seed(h, tag=newer)
    await request_card(h, requester="U0DEV2", text="api-gateway")
    new_card = h.cards()[-1]
    new_id = card_id(new_card)
    assert new_id != old_id and f"`{newer}`" in all_text(new_card)

    update = await card_update(h, old_card, lambda u: "Superseded" in header_text(u))
    assert buttons(update) == []
    reason = [o for o in text_objects(update["blocks"]) if o["type"] == "plain_text" and "superseded by" in o["text"]]
    assert reason and reason[0]["text"] == f"Reason: superseded by {new_id}"
    await in_thread(h, old_card, f"Superseded by a newer request `{new_id}` from <@U0DEV2>")
    assert promotion(h, old_id).status == "superseded" and promotion(h, old_id).decided_by == "U0DEV2"
    with Session(h.bot.engine) as s:
        assert s.get(ActivePromotion, ("api-gateway", "production")).promotion_id == new_id
    assert ("promotion.superseded", "U0DEV2") in audit_actions(h, promotion_id=old_id)


async def test_an_expired_request_updates_the_card_and_tells_the_requester(harness):
    h = harness
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    pid = card_id(card)
    h.clock.fixed = datetime.now(UTC) + timedelta(hours=4, minutes=1)  # approval_ttl is 4h
    update = await card_update(h, card, lambda u: "Expired" in header_text(u))
    assert buttons(update) == [] and "*Expires*" not in all_text(update)
    dm = await h.wait(lambda s: [m for m in s.messages("U0DEV") if "expired without approval" in m["text"]])
    assert pid in dm[0]["text"]
    assert promotion(h, pid).status == "expired"
    assert ("promotion.expired", "promobot") in audit_actions(h, promotion_id=pid)
    late = h.user("U0LEAD")
    await late.click(card, "promotion.approve")
    assert "is expired; nothing changed" in (await h.wait(lambda s: late.replies()))[0]["text"]


# --- rollback and holds ----------------------------------------------------------------------


async def test_rollback_shows_what_runs_and_what_it_replaces_then_holds_the_replaced_artifact(harness):
    h = harness
    await production_history(h)
    h.github.add_commits(REPO, "main", [sha(OLD)])
    await seed(h)
    await through_promotion(h, TAG, "production", deployed_at=ago(hours=2), verified_at=ago(hours=1))
    digests = {tag: artifact("api-gateway", tag)["digest"] for tag in (OLD, TAG)}

    # a tag never verified in production is refused, and says what to do
    reply = await reply_to(h, "U0DEV", "/rollback", "api-gateway 0000000 in production")
    assert "`0000000` was never verified in production" in all_text(reply) and "Omit the tag" in all_text(reply)

    reply = await reply_to(h, "U0DEV", "/rollback", "api-gateway in production error rate doubled")
    assert "Requested rollback" in reply["text"]
    card = h.cards()[-1]
    assert header_text(card) == "Rollback: api-gateway → production · Waiting for approval"
    rolls = section_with(card, ":rewind:")
    assert rolls == (
        f":rewind: Rolls production back to `{OLD}` (`{digests[OLD]}`), replacing `{TAG}` (`{digests[TAG]}`)."
    )
    why = [o["text"] for o in text_objects(card["blocks"]) if o["type"] == "plain_text"]
    assert "Why: error rate doubled" in why
    assert f"*Taken out by this rollback*: 1 commit(s) in `{TAG}` that `{OLD}` does not have" in all_text(card)
    assert section_with(card, f"`{OLD}` earlier in production").count("verification passed") == 1
    assert "Known good*: `a1b2c3d` passed verification in production" in all_text(card)

    await h.user("U0LEAD").click(card, "promotion.approve")
    dispatch = (
        await h.wait(lambda s: [d for d in production_dispatches(h) if d["inputs"]["promotion_id"] == card_id(card)])
    )[0]
    assert dispatch["inputs"]["image_tag"] == OLD and dispatch["inputs"]["image_digest"] == digests[OLD]
    await card_update(h, card, lambda u: "Deploying" in header_text(u))
    for event in (
        deployed("api-gateway", OLD, "production", run_id=str(dispatch["run_id"])),
        verified("api-gateway", OLD, "production"),
    ):
        assert (await h.event(event))[0] == 202
    await card_update(h, card, lambda u: "Verified" in header_text(u))
    await in_thread(h, card, f"`{TAG}` is now on hold")
    with Session(h.bot.engine) as s:
        held = s.exec(select(Artifact).where(Artifact.service == "api-gateway", Artifact.tag == TAG)).one()
        assert held.hold_reason == f"rolled back in production by {card_id(card)}: error rate doubled"
    assert ("artifact.held", "promobot") in audit_actions(h, action="artifact.held")

    # the held artifact cannot be promoted again; the refusal names who, when and why
    reply = await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG} to production")
    hold_line = section_with(reply, "Artifact hold")
    assert re.search(
        rf"\*Artifact hold\*: `{TAG}` is on hold by <@U0DEV> since \d{{4}}-\d\d-\d\d \d\d:\d\d UTC: "
        rf"`rolled back in production by prm-\w+: error rate doubled`",
        hold_line,
    )
    assert f"/promote hold clear api-gateway {TAG}" in hold_line

    # clearing needs a reason; then the gate passes again
    reply = await reply_to(h, "U0LEAD", "/promote", f"hold clear api-gateway {TAG}")
    assert "Expected `/promote hold clear SERVICE TAG reason…`" in reply["text"]
    reply = await reply_to(h, "U0LEAD", "/promote", f"hold clear api-gateway {TAG} leak fixed in 9b1e0d4")
    assert "<@U0LEAD> cleared the hold" in reply["text"] and "`leak fixed in 9b1e0d4`" in reply["text"]
    assert any("cleared the hold" in m["text"] for m in h.slack.messages("C0DEPLOYS"))
    with Session(h.bot.engine) as s:
        assert s.exec(select(Artifact.hold_reason).where(Artifact.tag == TAG)).one() is None
    assert audit_actions(h, action="artifact.hold_cleared") == [("artifact.hold_cleared", "U0LEAD")]
    reply = await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG} to production --check")
    assert f"Artifact hold*: `{TAG}` is not on hold" in all_text(reply)


async def test_a_hold_by_hand_blocks_automatic_promotion_too(harness):
    h = harness
    await seed(h, envs=())
    reply = await reply_to(h, "U0LEAD", "/promote", f"hold api-gateway {TAG} CVE triage pending")
    assert ":raised_hand: <@U0LEAD> put api-gateway `7a3f9c2` on hold: `CVE triage pending`" in reply["text"]
    for event in (deployed("api-gateway", TAG, "dev"), verified("api-gateway", TAG, "dev")):
        assert (await h.event(event))[0] == 202
    alert = await h.wait(lambda s: [m for m in s.messages("C0DEPLOYS") if "Automatic promotion" in m["text"]])
    assert "to staging refused" in alert[0]["text"]
    assert "Artifact hold: `7a3f9c2` is on hold by <@U0LEAD>" in alert[0]["text"]
    assert "`CVE triage pending`" in alert[0]["text"]
    assert h.github.dispatches() == []


# --- locks -----------------------------------------------------------------------------------


async def test_a_lock_refuses_manual_and_automatic_promotions_saying_who_when_and_why(harness):
    h = harness
    reply = await reply_to(h, "U0LEAD", "/promote", "lock api-gateway staging db migration INC-42")
    assert reply["text"].startswith(":lock: Locked api-gateway in staging: `db migration INC-42`.")
    with Session(h.bot.engine) as s:
        lock = s.get(EnvironmentLock, ("api-gateway", "staging"))
        assert lock.locked_by == "U0LEAD" and lock.reason == "db migration INC-42"
    assert audit_actions(h, action="environment.locked") == [("environment.locked", "U0LEAD")]

    # automatic: dev's verification would start gate 1 into staging; the lock refuses it, in the channel
    await seed(h, envs=("dev",))
    alert = (await h.wait(lambda s: [m for m in s.messages("C0DEPLOYS") if "Automatic promotion" in m["text"]]))[0]
    assert re.search(
        r"Automatic promotion of api-gateway `7a3f9c2` to staging refused:\n• Environment lock: "
        r"api-gateway in staging was locked by <@U0LEAD> at \d{4}-\d\d-\d\d \d\d:\d\d UTC: "
        r"`db migration INC-42`",
        alert["text"],
    ), alert["text"]
    assert alert["blocks"][0]["text"]["type"] == "mrkdwn"
    assert h.github.dispatches() == []

    # manual: the refusal's blocks carry the same who, when and why, and the way out
    reply = await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG} to staging")
    line = section_with(reply, "Environment lock")
    assert "was locked by <@U0LEAD> at" in line and "`db migration INC-42`" in line
    assert "/promote unlock api-gateway staging" in line
    assert h.cards(target="staging") == []

    # a second lock says who holds it; unlock tells what it was
    reply = await reply_to(h, "U0DEV", "/promote", "lock api-gateway staging mine now")
    assert "already locked by <@U0LEAD>" in reply["text"]
    # lifting it needs an approver: staging has none, so production's (whose safety the lock protects)
    reply = await reply_to(h, "U0DEV", "/promote", "unlock api-gateway staging")
    assert "Lifting the lock on api-gateway in staging needs an approver of production" in reply["text"]
    assert "the lock stays" in reply["text"]
    reply = await reply_to(h, "U0RM1", "/promote", "unlock api-gateway staging")  # in the S0RELEASE group
    assert ":unlock: Unlocked api-gateway in staging (locked by <@U0LEAD>" in reply["text"]
    with Session(h.bot.engine) as s:
        assert s.get(EnvironmentLock, ("api-gateway", "staging")) is None
    reply = await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG} to staging")
    assert "is going to staging (approval: automatic)" in reply["text"]


# --- help, mistakes, escaping -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, text, expected",
    [
        ("/promote", "help", "Examples: `/promote api-gateway 7a3f9c2 to production`"),
        ("/rollback", "help", "Examples: `/rollback api-gateway`"),
        ("/status", "help", "Example: `/status api-gateway`"),
        ("/promote", "", "`/promote SERVICE TAG to ENV` — name the target"),
        ("/promote", "lock api-gateway", "Expected `/promote lock SERVICE ENV reason…`"),
        ("/promote", "lock api-gateway production", "Expected `/promote lock SERVICE ENV reason…`"),
        ("/promote", "unlock api-gateway", "Expected `/promote unlock SERVICE ENV`"),
        ("/promote", "lock api-gateway prod incident", "Unknown environment `prod`: did you mean `production`?"),
        ("/promote", "lock api-gatewy production incident", "did you mean `api-gateway`?"),
        ("/promote", "revoke", "Expected `/promote revoke PROMOTION_ID`"),
        ("/promote", "revoke prm-nope", "There is no promotion `prm-nope`. Expected `/promote revoke PROMOTION_ID`"),
        ("/promote", "hold api-gateway 7a3f9c2", "Expected `/promote hold SERVICE TAG reason…`"),
        ("/promote", "hold api-gateway 0000000 bad build", "No artifact `0000000` is recorded for api-gateway"),
        ("/promote", "api-gateway 7a3f9c2 to", "`to` needs an environment"),
        ("/promote", "api-gateway a b c", "Expected `/promote SERVICE [TAG] [to ENV] [--check] [--expedite REASON…]`"),
        ("/rollback", "api-gatewy", "Unknown service `api-gatewy`: did you mean `api-gateway`?"),
        ("/rollback", "api-gateway in prod", "Unknown environment `prod`: did you mean `production`?"),
        ("/rollback", "api-gateway in", "`in` needs an environment"),
        ("/rollback", "api-gateway", "nothing known-good to roll back to"),
        ("/status", "api-gatewy", "Unknown service `api-gatewy`: did you mean `api-gateway`?"),
        ("/status", "api-gateway billing", "Expected `/status` or `/status SERVICE`"),
    ],
)
async def test_help_and_every_mistake_say_what_was_expected(harness, command, text, expected):
    reply = await reply_to(harness, "U0DEV", command, text)
    assert expected in all_text(reply), all_text(reply)
    assert reply["response_type"] == "ephemeral"


async def test_a_command_that_mentions_payload_is_answered_like_any_other(harness):
    """Bolt's own body parser reads any form body containing the word "payload" as an interactivity
    payload, and a command saying it was dropped unanswered: promobot parses the body once, itself."""
    h = harness
    await seed(h)
    reply = await reply_to(h, "U0DEV", "/promote", "lock api-gateway production payload migration tonight")
    assert "Locked api-gateway in production" in all_text(reply), all_text(reply)
    assert "payload migration tonight" in all_text(reply)
    reply = await reply_to(h, "U0DEV", "/status", "payload")
    assert "Unknown service `payload`" in all_text(reply), all_text(reply)


async def test_nothing_people_type_becomes_a_mention_a_broadcast_or_formatting(harness):
    h = harness
    await production_history(h)
    await seed(h)
    await through_promotion(h, TAG, "production")
    for command, text in (
        ("/promote", f"lock billing production {INJECTION}"),
        ("/promote", f"hold api-gateway {OLD} {INJECTION}"),
        ("/promote", f"hold clear api-gateway {OLD} {INJECTION}"),  # refused: U0DEV approves nothing
        ("/promote", f"{INJECTION} 7a3f9c2"),
        ("/promote", f"api-gateway {INJECTION}"),
        ("/status", "<!channel>"),
        ("/rollback", "<!channel> in production"),
        ("/status", "api-gateway"),
    ):
        await reply_to(h, "U0DEV", command, text)
    await reply_to(h, "U0LEAD", "/promote", f"hold clear api-gateway {OLD} {INJECTION}")
    await reply_to(h, "U0DEV", "/rollback", f"api-gateway in production {INJECTION}")
    card = h.cards()[-1]
    why = [o for o in text_objects(card["blocks"]) if o["type"] == "plain_text" and o["text"].startswith("Why:")]
    assert why[0]["text"] == "Why: &lt;!channel&gt; &lt;@U0EVIL&gt; *bold* `tick"

    # the lock's reason reaches billing's refusal, the status and the card's reject thread
    await reply_to(h, "U0DEV", "/promote", "billing 7a3f9c2 to production --check")
    await reply_to(h, "U0DEV", "/status", "billing")
    await h.user("U0LEAD").click(card, "promotion.reject")
    view = (await h.wait(lambda s: s.calls("views.open")))[0]["params"]["view"]
    await h.user("U0LEAD").submit_view(view, {"reason": {"value": {"type": "plain_text_input", "value": INJECTION}}})
    await card_update(h, card, lambda u: "Rejected" in header_text(u))
    await h.wait(lambda s: [m for m in s.messages("U0DEV") if "rejected" in m["text"]])
    posted = everything_posted(h)
    assert_no_injection(posted)
    assert any("&lt;!channel&gt;" in all_text(m) for m in posted)
    assert "`&lt;!channel&gt; &lt;@U0EVIL&gt; *bold* ˋtick`" in all_text(h.slack.messages("U0DEV")[-1])


@pytest.mark.parametrize(
    "message, title, number",
    [
        ("Fix retry loop (#12)", "Fix retry loop (#12)", 12),
        ("Merge pull request #31 from acme/rate-limit\n\nAdd rate limiting", "Add rate limiting", 31),
        ("Merge pull request #7 from acme/x", "Merge pull request #7 from acme/x", 7),
        ("Tidy imports\n\nsee #4", "Tidy imports", None),
        ("", "abcdef1", None),
    ],
)
def test_commit_titles_name_their_pull_request(message, title, number):
    from bot.clients.source_host import summarize_commit

    commit = summarize_commit("abcdef1234", message, "dev")
    assert (commit.title, commit.pull_request, commit.author) == (title, number, "dev")
