"""What a Slack request leaves for after its ack, run so that acks come first.

Slack gives three seconds to acknowledge a command or a click. promobot's Bolt app processes each request
before it answers it (``process_before_response``): a listener does only what must come before the ack
(an approval is recorded), acks, and hands the rest here: a command's checks and answer, a click's card
redraw and thread note, a refusal's private message.

A follow-up starts while the event loop keeps up: when a pass over its ready callbacks took less than
``QUIET`` seconds, ``BATCH`` of them start, oldest first. Under a burst of requests the passes are long,
full of requests being read and acked, and the follow-ups wait, each for at most ``MAX_WAIT`` seconds
(then it starts, whatever the loop is doing): so the burst is acked first and answered after, and under a
flood that lasts longer every answer still comes, ``MAX_WAIT`` late.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

QUIET = 0.005  # seconds: a pass of the event loop this short means it keeps up
BATCH = 8  # follow-ups started per pass at most
MAX_WAIT = 2.0  # seconds a follow-up waits at most


class FollowUps:
    """The follow-ups of one server's Slack requests (one event loop)."""

    def __init__(self, *, quiet: float = QUIET, batch: int = BATCH, max_wait: float = MAX_WAIT) -> None:
        self.quiet = quiet
        self.batch = batch
        self.max_wait = max_wait
        self._waiting: deque[tuple[float, str, Callable[[], Awaitable[None]]]] = deque()  # (queued at, what, work)
        self._running: set[asyncio.Task[None]] = set()
        self._probing = False
        self._stopping = False  # drained: what comes after starts at once
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self, what: str, work: Callable[[], Awaitable[None]], *, now: bool = False) -> None:
        """Run ``work()`` when its turn comes (``now``: at once, for work with a Slack deadline of its own);
        ``what`` names it in the log if it fails."""
        loop = asyncio.get_running_loop()
        self._idle.clear()
        if now or self._stopping:
            self._run(loop, what, work)
            return
        self._waiting.append((loop.time(), what, work))
        self._probe(loop)

    async def drain(self, timeout: float) -> bool:
        """For a stopping server: start every follow-up, and from now on start each at once (for good); wait
        until all have run (at most ``timeout`` seconds). False if some had not."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        while self._waiting:
            _, what, work = self._waiting.popleft()
            self._run(loop, what, work)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def pending(self) -> int:
        """Follow-ups waiting or running."""
        return len(self._waiting) + len(self._running)

    def _probe(self, loop: asyncio.AbstractEventLoop) -> None:
        """Measure the event loop's next pass, then start what may (one probe at a time)."""
        if self._probing or not self._waiting:
            return
        self._probing = True
        loop.call_soon(self._probed, loop, loop.time())

    def _probed(self, loop: asyncio.AbstractEventLoop, asked_at: float) -> None:
        self._probing = False
        now = loop.time()
        quiet = now - asked_at < self.quiet
        started = 0
        while self._waiting:
            queued_at, what, work = self._waiting[0]
            overdue = now - queued_at >= self.max_wait
            if not overdue and not (quiet and started < self.batch):
                break
            self._waiting.popleft()
            self._run(loop, what, work)
            started += 1
        self._probe(loop)

    def _run(self, loop: asyncio.AbstractEventLoop, what: str, work: Callable[[], Awaitable[None]]) -> None:
        task = loop.create_task(self._follow_up(what, work))
        self._running.add(task)
        task.add_done_callback(self._finished)

    @staticmethod
    async def _follow_up(what: str, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except Exception:
            log.exception("%s failed after Slack's ack", what)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._running and not self._waiting:
            self._idle.set()
