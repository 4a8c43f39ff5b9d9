"""A burst of commands: gate evaluations and status screens are worked on a few at a time after the ack,
each command in its own lane. /promote checks stuck on a slow GitHub hold up neither /status nor a lock,
and every answer that waited its turn arrives."""

from __future__ import annotations

import asyncio

from handlers.commands import ANSWERS_AT_ONCE
from tests.harness import TAG, all_text, seed


async def test_promote_checks_stuck_on_a_slow_github_hold_up_neither_status_nor_a_lock_and_all_answer(harness):
    h = harness
    await seed(h)
    stuck = ANSWERS_AT_ONCE + 2  # more than one lane holds: some wait their turn
    h.github.delay_next(3.0, "/repos/acme/api-gateway", count=100)
    checkers = [h.user(f"U0DEV{n}") for n in range(stuck)]
    for person in checkers:
        acked = await person.command("/promote", f"api-gateway {TAG} --check")
        assert acked.status == 200  # acknowledged at once, whatever the answer waits for

    asker = h.user("U0ASK")
    await asker.command("/status", "api-gateway")
    status = (await h.wait(lambda s: asker.replies(), timeout=2.5))[0]
    assert "Status of api-gateway" in status["text"]
    lead = h.user("U0LEAD")
    await lead.command("/promote", "lock api-gateway staging db migration INC-42")
    locked = (await h.wait(lambda s: lead.replies(), timeout=2.5))[0]
    assert locked["text"].startswith(":lock: Locked api-gateway in staging")
    assert not any(person.replies() for person in checkers)  # the checks still wait on GitHub

    answers = await asyncio.gather(*(h.wait(lambda s, p=p: p.replies(), timeout=20) for p in checkers))
    assert len(answers) == stuck
    assert all("is eligible" in all_text(reply[0]) for reply in answers), answers
