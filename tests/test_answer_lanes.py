"""A burst of commands: each command answers a few at a time after its ack, in its own lane. /promote
checks stuck on a slow GitHub do not hold up /status, and every answer that waited its turn arrives."""

from __future__ import annotations

import asyncio

from handlers.slack_app import ANSWERS_AT_ONCE
from tests.harness import TAG, all_text, seed


async def test_promote_checks_stuck_on_a_slow_github_do_not_hold_up_status_and_all_answer(harness):
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
    assert not any(person.replies() for person in checkers)  # the checks still wait on GitHub

    answers = await asyncio.gather(*(h.wait(lambda s, p=p: p.replies(), timeout=20) for p in checkers))
    assert len(answers) == stuck
    assert all("is eligible" in all_text(reply[0]) for reply in answers), answers
