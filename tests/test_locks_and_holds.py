"""Locks and holds as the promotion model's safety valves: anyone may place one, with a reason; lifting
one needs an approver. Through the real server, with Slack's signed requests."""

from __future__ import annotations

from sqlmodel import Session, select

from storage.models import Artifact, EnvironmentLock
from tests.harness import TAG, all_text, seed


async def reply_to(h, user: str, command: str, text: str) -> dict:
    person = h.user(user)
    await person.command(command, text)
    return (await h.wait(lambda s: person.replies()))[0]


async def test_a_hold_or_lock_with_an_empty_reason_is_refused_and_changes_nothing(harness):
    h = harness
    await seed(h)
    for text in (f"hold api-gateway {TAG} ''", f'hold api-gateway {TAG} "   "', "lock api-gateway production ''"):
        reply = all_text(await reply_to(h, "U0DEV", "/promote", text))
        assert "reason" in reply, reply
        assert "put api-gateway" not in reply and "Locked" not in reply, reply
    with Session(h.bot.engine) as s:
        held = s.exec(select(Artifact.hold_reason).where(Artifact.tag == TAG)).one()
        assert held is None  # not "on hold" with an empty reason that no gate enforces
        assert s.exec(select(EnvironmentLock)).all() == []
    # and the artifact is not announced as held anywhere
    assert not [m for m in h.slack.messages("C0DEPLOYS") if "on hold" in m.get("text", "")]
