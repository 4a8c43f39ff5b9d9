"""A burst of changes to one card: fewer redraws than changes, the thread notes in the order they were
announced and one message per redraw, each note in place when its announcement returns (what the engine
says next, e.g. a channel alert, comes after it)."""

from __future__ import annotations

import asyncio
import time

from bot.engine.notifications import NOTE_CHARS, REDRAW_EVERY
from tests.harness import TAG, all_text, request_card, seed, thread


async def pending_card(h) -> tuple[dict, str]:
    """A production promotion waiting for approval: its card, and its id."""
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    return card, next(word.strip("`") for word in all_text(card).split() if word.strip("`").startswith("prm-"))


async def test_a_burst_of_announcements_redraws_the_card_a_few_times_and_keeps_the_notes_in_order(harness):
    h = harness
    card, pid = await pending_card(h)
    notifications = h.bot.service.notifications
    before = len(h.slack.updates(card["channel"]))

    await asyncio.gather(*(notifications.announce(pid, f"note {n}") for n in range(10)))

    def notes() -> list[str]:
        return [line for t in thread(h, card) for line in t.splitlines() if line.startswith("note ")]

    # each announcement returns once its note is in the thread, after a redraw that read what it announced
    assert notes() == [f"note {n}" for n in range(10)]  # in the order announced
    redraws = len(h.slack.updates(card["channel"])) - before
    assert 1 <= redraws < 10, redraws  # coalesced: the first, and one more for all that came meanwhile
    # the notes one redraw serves go in one message, a line each: a burst is a few messages, not ten
    assert len([t for t in thread(h, card) if t.startswith("note ")]) == redraws


async def test_an_announcement_made_while_the_card_is_being_redrawn_returns_once_its_note_is_posted(harness):
    h = harness
    card, pid = await pending_card(h)
    notifications = h.bot.service.notifications

    drawing = asyncio.ensure_future(notifications.announce(pid, "first"))
    await asyncio.sleep(0)  # the first announcement has started its redraw
    await notifications.announce(pid, "second")

    assert [t for t in thread(h, card) if t in ("first", "second")] == ["first", "second"]
    await drawing


async def test_a_note_and_a_redraw_that_slack_rate_limits_are_sent_again_after_retry_after(harness):
    """Slack answers a burst with 429 and Retry-After; the note and the card's redraw are sent again once it
    has passed, not dropped."""
    h = harness
    card, pid = await pending_card(h)
    notifications = h.bot.service.notifications
    h.slack.fail_next("chat.update")  # 429 ratelimited, Retry-After: 1
    h.slack.fail_next("chat.postMessage")

    await notifications.announce(pid, "note after a 429")

    assert "note after a 429" in thread(h, card)
    updates = [c for c in h.slack.calls("chat.update") if c["params"].get("ts") == card["ts"]]
    assert [c["response"].get("ok") for c in updates[-2:]] == [False, True]  # refused, then sent again


async def test_a_burst_on_one_card_is_redrawn_at_a_pace_that_holds_up_no_other_card(harness):
    h = harness
    card, pid = await pending_card(h)
    await seed(h, service="billing")
    await request_card(h, text=f"billing {TAG}")
    other = h.cards("C0BILLING")[-1]
    other_pid = next(w.strip("`") for w in all_text(other).split() if w.strip("`").startswith("prm-"))
    notifications = h.bot.service.notifications
    before = len(h.slack.updates(card["channel"]))

    burst = asyncio.ensure_future(asyncio.gather(*(notifications.announce(pid, f"note {n}") for n in range(10))))
    await asyncio.sleep(0.05)  # the burst's first redraw is under way, the rest wait for the next
    started = time.monotonic()
    await notifications.announce(other_pid, "on the other card")
    assert time.monotonic() - started < REDRAW_EVERY  # not held by the first card's pace
    assert not burst.done()
    await burst

    redraws = [u["at"] for u in h.slack.calls("chat.update") if u["params"].get("ts") == card["ts"]][-2:]
    assert len(h.slack.updates(card["channel"])) - before == 2  # the first, and one for the nine that waited
    assert redraws[1] - redraws[0] >= REDRAW_EVERY * 0.9
    assert "on the other card" in thread(h, other)


async def test_notes_joined_for_one_redraw_are_split_where_one_message_would_be_too_long(harness):
    h = harness
    card, pid = await pending_card(h)
    notifications = h.bot.service.notifications
    long_notes = [f"long {n} " + "x" * 1200 for n in range(6)]

    await asyncio.gather(*(notifications.announce(pid, note) for note in ["first", *long_notes]))

    posted = [t for t in thread(h, card) if t.startswith(("first", "long "))]
    assert [line for t in posted for line in t.splitlines()] == ["first", *long_notes]  # every note, in order
    assert all(len(t) <= NOTE_CHARS for t in posted) and len(posted) >= 4
