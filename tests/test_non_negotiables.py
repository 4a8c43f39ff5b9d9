"""The promotion model's non-negotiables, through the real server with Slack's signed requests: what a team
may switch off is shown as off, never silently absent; what it may not is refused in promobot.yml (see
tests/test_config.py); ``latest`` is never promotable; a protected environment always needs a person."""

from __future__ import annotations

import pytest

from tests.harness import CONFIG, TAG, all_text, header_text, production_dispatches, seed

# production lets soak and the source-commit check be switched off (the model does not make them
# non-negotiable); a 30-day soak that nothing could meet shows that "off" really does not block
SOAK_OFF = CONFIG.replace(
    "    soak_time: 1h\n", "    soak_time: 30d\n    checks: {soak_time: false, source_commit_reachable: false}\n"
)
# staging protected: a person approves it, and its non-negotiable gates run (its digest gate is back on)
PROTECTED = CONFIG.replace(
    "  - name: staging\n    approval: automatic\n    checks: {digest_matches: false}\n",
    "  - name: staging\n    approval: manual\n    protected: true\n    approvers: [U0QA]\n",
)
MUTABLE = CONFIG.replace("policy:\n", "policy:\n  mutable_tags: [snapshot]\n")


async def reply_to(h, user: str, command: str, text: str) -> dict:
    person = h.user(user)
    await person.command(command, text)
    return (await h.wait(lambda s: person.replies()))[0]


def line_of(text: str, title: str) -> str:
    return next(line for line in text.splitlines() if f"*{title}*" in line)


@pytest.mark.parametrize("config_text", [SOAK_OFF])
async def test_a_gate_switched_off_where_allowed_is_shown_as_off_and_does_not_block(harness):
    h = harness
    await seed(h)
    check = all_text(await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG} --check"))
    assert "is eligible" in check
    soak = line_of(check, "Soak time")
    assert (
        soak.startswith(":white_circle:")
        and "off by configuration (environments.production.checks.soak_time: false)" in soak
    )
    assert "off by configuration" in line_of(check, "Source commit reachable")
    assert ":white_check_mark:" in line_of(check, "Digest matches")  # non-negotiable here: it ran

    reply = await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG}")
    assert "Requested promotion" in reply["text"]
    card = all_text(h.cards()[-1])
    assert "off by configuration (environments.production.checks.soak_time: false)" in line_of(card, "Soak time")
    assert "off by configuration" in line_of(card, "Source commit reachable")
    await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
    await h.wait(lambda s: production_dispatches(h))
    # the pipeline API reports it the same way: a distinct status, not "passed"
    status, report = await h.get(f"/api/v1/eligibility?service=api-gateway&tag={TAG}&environment=production")
    assert status == 200
    assert {g["gate"]: g["status"] for g in report["gates"]}["soak_time"] == "off"


@pytest.mark.parametrize("config_text", [CONFIG, MUTABLE])
async def test_latest_without_a_target_is_refused_by_the_mutable_tag_rule(harness, config_text):
    h = harness
    await seed(h)
    for text in ("api-gateway latest", "api-gateway latest --check", "api-gateway LATEST"):
        reply = all_text(await reply_to(h, "U0DEV", "/promote", text))
        assert "is a mutable tag" in reply and "can never be promoted" in reply, reply
        assert "No artifact" not in reply and "is recorded" not in reply
    if config_text == MUTABLE:  # a team's own names are refused as well, besides latest
        reply = all_text(await reply_to(h, "U0DEV", "/promote", "api-gateway snapshot"))
        assert "`snapshot` is a mutable tag" in reply
    with_target = all_text(await reply_to(h, "U0DEV", "/promote", "api-gateway latest to production"))
    assert ":x: *Immutable tag*: `latest` is a mutable tag" in with_target
    assert h.cards() == []


@pytest.mark.parametrize("config_text", [PROTECTED])
async def test_a_protected_environment_always_needs_a_person(harness):
    h = harness
    await seed(h, envs=("dev",))  # dev's verification no longer promotes into staging by itself
    reply = await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG} to staging")
    assert "waiting for 1 approval(s)" in reply["text"]
    card = h.cards(target="staging")[-1]
    assert header_text(card) == "Promotion: api-gateway → staging · Waiting for approval"
    assert ":white_check_mark:" in line_of(all_text(card), "Digest matches")  # it ran: it cannot be off there
    assert h.github.dispatches() == []
    await h.user("U0QA").click(card, "promotion.approve")
    dispatch = (await h.wait(lambda s: h.github.dispatches()))[0]
    assert dispatch["inputs"]["environment"] == "staging"
