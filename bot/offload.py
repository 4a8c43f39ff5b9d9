"""Short blocking work kept off the event loop: database reads and rendering for a command's answer.

The event loop acknowledges Slack (three seconds, or the user sees an error), so what a command reads
and renders runs here. The pool is small on purpose: this work is short and holds the interpreter's
lock, so more threads would only make the event loop wait longer for its turn. Blocking network calls,
which may take seconds (GitHub), use ``asyncio.to_thread`` instead and never hold these threads.

Work that a Slack deadline waits on (``urgent``: an approval is recorded before its click is
acknowledged; a reject's modal must open within the three seconds its trigger id lives) has threads of
its own. On the readers' pool it waited behind the answers of every click acknowledged before it: under
50 clients clicking, an approval's ack took a second.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_READERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reads")
_URGENT = ThreadPoolExecutor(max_workers=8, thread_name_prefix="urgent")


async def off_loop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the readers' pool; the event loop stays free meanwhile."""
    return await _on(_READERS, functools.partial(fn, *args, **kwargs))


async def urgent(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the threads kept for work a Slack deadline waits on."""
    return await _on(_URGENT, functools.partial(fn, *args, **kwargs))


async def _on(pool: ThreadPoolExecutor, call: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, call)
