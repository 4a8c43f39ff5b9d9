"""What a Slack request leaves for after its ack: it runs once the event loop keeps up, so a burst is acked
first and answered after; it never waits longer than its bound; one that fails is logged and the others
run; a stopping server runs what is left."""

from __future__ import annotations

import asyncio
import logging
import time

from handlers.followups import FollowUps


class BusyLoop:
    """Keeps the event loop's passes long, as a burst of requests being read and acked does: a callback that
    holds the loop for ``hold`` seconds on every pass."""

    def __init__(self, hold: float = 0.02) -> None:
        self.hold = hold
        self.passes = 0
        self._on = False

    def __enter__(self) -> BusyLoop:
        self._on = True
        asyncio.get_running_loop().call_soon(self._pass)
        return self

    def __exit__(self, *_: object) -> None:
        self._on = False

    def _pass(self) -> None:
        if not self._on:
            return
        self.passes += 1
        time.sleep(self.hold)  # the interpreter busy on the loop: parsing, signing, dispatching
        asyncio.get_running_loop().call_soon(self._pass)


def recorder(log: list[tuple[str, float]], name: str):
    async def work() -> None:
        log.append((name, time.monotonic()))

    return work


async def test_a_follow_up_starts_at_once_when_the_loop_is_idle():
    followups = FollowUps()
    ran: list[tuple[str, float]] = []
    followups.start("a command", recorder(ran, "answer"))
    assert await followups.drain(timeout=1.0)
    assert [name for name, _ in ran] == ["answer"]


async def test_under_a_burst_follow_ups_wait_while_acks_go_and_start_within_their_bound():
    followups = FollowUps(max_wait=0.3)
    ran: list[tuple[str, float]] = []
    queued = time.monotonic()
    with BusyLoop() as busy:
        for n in range(5):
            followups.start("a click", recorder(ran, f"answer {n}"))
        acked = []

        async def ack(n: int) -> None:  # a request handled on the busy loop: a few passes, no follow-up in them
            for _ in range(3):
                await asyncio.sleep(0)
            acked.append((n, time.monotonic()))

        await asyncio.gather(*(ack(n) for n in range(5)))
        assert len(acked) == 5 and not ran  # acked, and nothing of the answers has run yet
        while len(ran) < 5 and time.monotonic() - queued < 3:
            await asyncio.sleep(0.01)
        assert busy.passes > 10
    assert [name for name, _ in ran] == [f"answer {n}" for n in range(5)]  # oldest first
    assert all(0.3 <= at - queued < 1.0 for _, at in ran)  # held to the bound, not past it


async def test_once_the_loop_keeps_up_again_the_waiting_follow_ups_start_before_their_bound():
    followups = FollowUps(max_wait=5.0)
    ran: list[tuple[str, float]] = []
    with BusyLoop():
        for n in range(20):
            followups.start("a click", recorder(ran, f"answer {n}"))
        await asyncio.sleep(0.2)
        assert not ran and followups.pending == 20
    calm = time.monotonic()
    while len(ran) < 20 and time.monotonic() - calm < 2.0:
        await asyncio.sleep(0.01)
    assert [name for name, _ in ran] == [f"answer {n}" for n in range(20)]
    assert all(at - calm < 0.5 for _, at in ran)  # long before their 5 s bound


async def test_work_with_a_deadline_of_its_own_starts_at_once_even_under_a_burst():
    followups = FollowUps(max_wait=5.0)
    ran: list[tuple[str, float]] = []
    with BusyLoop():
        followups.start("a click", recorder(ran, "answer"))
        followups.start("a reject", recorder(ran, "modal"), now=True)
        for _ in range(5):
            await asyncio.sleep(0)
    assert [name for name, _ in ran] == ["modal"]  # the reject's modal (its trigger lives 3 s); the answer waits
    assert await followups.drain(timeout=1.0)
    assert [name for name, _ in ran] == ["modal", "answer"]


async def test_a_follow_up_that_fails_is_logged_and_the_others_run(caplog):
    followups = FollowUps()
    ran: list[tuple[str, float]] = []

    async def broken() -> None:
        raise RuntimeError("Slack said no")

    followups.start("a revoke", broken)
    followups.start("a cancel", recorder(ran, "answer"))
    with caplog.at_level(logging.ERROR, logger="handlers.followups"):
        assert await followups.drain(timeout=1.0)
    assert [name for name, _ in ran] == ["answer"]
    assert "a revoke failed after Slack's ack" in caplog.text and "Slack said no" in caplog.text
    assert followups.pending == 0


async def test_a_stopping_server_runs_what_waits_and_says_when_some_did_not_finish():
    followups = FollowUps(max_wait=60.0)
    ran: list[tuple[str, float]] = []
    stuck = asyncio.Event()

    async def slow() -> None:
        await stuck.wait()

    with BusyLoop():
        followups.start("a command", recorder(ran, "answer"))
        followups.start("a command", slow)
        await asyncio.sleep(0.1)
        assert not ran
        finished = await followups.drain(timeout=0.3)  # started at once, even with the loop busy
    assert [name for name, _ in ran] == ["answer"]
    assert not finished and followups.pending == 1
    stuck.set()
    assert await followups.drain(timeout=1.0) and followups.pending == 0


async def test_under_a_flood_no_follow_up_waits_much_past_its_bound():
    """More follow-ups come each pass than a pass starts: those whose wait is up all start, so the backlog
    does not grow with the length of the flood."""
    followups = FollowUps(max_wait=0.3)
    waits: list[float] = []

    def recorded(queued: float):
        async def work() -> None:
            waits.append(time.monotonic() - queued)

        return work

    with BusyLoop(hold=0.02):  # 20 ms passes
        flood_ends = time.monotonic() + 1.5
        while time.monotonic() < flood_ends:
            for _ in range(3 * followups.batch):  # three times what one pass starts when the loop keeps up
                followups.start("a click", recorded(time.monotonic()))
            await asyncio.sleep(0)
        while followups.pending and time.monotonic() < flood_ends + 3:
            await asyncio.sleep(0)
    assert len(waits) > 10 * 3 * followups.batch  # ten passes' worth and more
    assert max(waits) < 0.3 + 0.2, max(waits)  # the bound, and a few passes
