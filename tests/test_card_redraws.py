"""A burst of changes to one card: fewer redraws than changes, the card ends on the latest state, and the
thread notes come in the order they were announced."""

from __future__ import annotations

import asyncio

from tests.harness import all_text, request_card, seed, thread


async def test_a_burst_of_announcements_redraws_the_card_a_few_times_and_keeps_the_notes_in_order(harness):
    h = harness
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    pid = next(word.strip("`") for word in all_text(card).split() if word.strip("`").startswith("prm-"))
    notifications = h.bot.service.notifications
    before = len(h.slack.updates(card["channel"]))

    await asyncio.gather(*(notifications.announce(pid, f"note {n}") for n in range(10)))

    def notes() -> list[str]:
        return [t for t in thread(h, card) if t.startswith("note ")]

    await h.wait(lambda s: len(notes()) == 10)
    assert notes() == [f"note {n}" for n in range(10)]  # in the order announced
    redraws = len(h.slack.updates(card["channel"])) - before
    assert 1 <= redraws < 10, redraws  # coalesced: the first, and one more for all that came meanwhile
