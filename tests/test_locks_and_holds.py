"""Locks and holds as the promotion model's safety valves: anyone may place one, with a reason; lifting
one needs an approver. Through the real server, with Slack's signed requests."""

from __future__ import annotations

from sqlmodel import Session, select

from storage.models import Artifact, AuditEvent, EnvironmentLock
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


async def test_anyone_locks_but_only_an_approver_of_that_environment_lifts_it(harness):
    h = harness
    await seed(h)
    await h.user("U0DEV").command("/promote", f"api-gateway {TAG}")  # the requester's own promotion
    await h.wait(lambda s: h.cards())
    # a stranger stops it: safety is cheap
    locked = all_text(await reply_to(h, "U0STRANGER", "/promote", "lock api-gateway production pager is on fire"))
    assert locked.startswith(":lock: Locked api-gateway in production")
    # the requester cannot lift the lock that stops their own dispatch, nor can the stranger who placed it
    for user in ("U0DEV", "U0STRANGER"):
        refused = all_text(await reply_to(h, user, "/promote", "unlock api-gateway production"))
        assert "Lifting the lock on api-gateway in production needs an approver of production" in refused
        assert "<@U0LEAD>, <!subteam^S0RELEASE>" in refused and "pager is on fire" in refused
        assert "the lock stays" in refused
    with Session(h.bot.engine) as s:
        assert s.get(EnvironmentLock, ("api-gateway", "production")) is not None
    # an approver of production lifts it (a member of the approver group counts)
    lifted = all_text(await reply_to(h, "U0RM2", "/promote", "unlock api-gateway production"))
    assert lifted.startswith(":unlock: Unlocked api-gateway in production")
    with Session(h.bot.engine) as s:
        assert s.get(EnvironmentLock, ("api-gateway", "production")) is None
        actions = [(e.action, e.actor) for e in s.exec(select(AuditEvent).order_by(AuditEvent.seq))]
    assert ("environment.locked", "U0STRANGER") in actions and ("environment.unlocked", "U0RM2") in actions


async def test_anyone_holds_but_only_an_approver_of_the_last_environment_clears_a_hold(harness):
    h = harness
    await seed(h)
    held = all_text(await reply_to(h, "U0DEV", "/promote", f"hold api-gateway {TAG} leaks memory"))
    assert "put api-gateway `7a3f9c2` on hold" in held
    # the hold keeps the artifact out of every environment, production included: production's approvers decide
    for user in ("U0DEV", "U0STRANGER"):
        refused = all_text(await reply_to(h, user, "/promote", f"hold clear api-gateway {TAG} looks fine to me"))
        assert "Clearing the hold on api-gateway `7a3f9c2` needs an approver of production" in refused
        assert "leaks memory" in refused and "the hold stays" in refused
    check = all_text(await reply_to(h, "U0DEV", "/promote", f"api-gateway {TAG} --check"))
    assert "*Artifact hold*: `7a3f9c2` is on hold by <@U0DEV>" in check
    cleared = all_text(await reply_to(h, "U0LEAD", "/promote", f"hold clear api-gateway {TAG} fixed in 9b1e0d4"))
    assert "<@U0LEAD> cleared the hold" in cleared
    with Session(h.bot.engine) as s:
        assert s.exec(select(Artifact.hold_reason).where(Artifact.tag == TAG)).one() is None
