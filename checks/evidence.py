"""One evaluation's view of the evidence: every question asked once, however many gates ask it.

The gates of one evaluation run at the same time on their own threads and ask overlapping questions
(the artifact, its deployments and verifications in the previous environment, its manifest). Each
question is answered once per evaluation and shared: the gates see the same answer (one snapshot of
the ledger, one manifest), and a check costs a handful of queries instead of one per gate per
question. Nothing is kept between evaluations: the next one asks again, so a digest moved since the
last check is seen.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

from checks.base import Ledger, ManifestInfo, Registry, RegistryError

T = TypeVar("T")

HISTORY = 50  # the longest history a gate reads (soak time, previous environment verified)


class _Answers:
    """Answers by question, each computed by the first asker while later askers wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[Hashable, Future[Any]] = {}

    def claim(self, key: Hashable) -> tuple[Future[Any], bool]:
        """The future holding ``key``'s answer, and whether the caller must compute it."""
        with self._lock:
            future = self._answers.get(key)
            if future is not None:
                return future, False
            future = self._answers[key] = Future()
            return future, True


def _settle(future: Future[Any], compute: Callable[[], Any]) -> Any:
    try:
        value = compute()
    except BaseException as exc:
        future.set_exception(exc)
        raise
    future.set_result(value)
    return value


class SharedLedger:
    """A ledger whose reads are made once per evaluation (thread-safe); a failed read is shared too, so
    every gate that needs it errors alike."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._answers = _Answers()

    def _ask(self, method: str, *args: Any, **kwargs: Any) -> Any:
        future, mine = self._answers.claim((method, args, tuple(sorted(kwargs.items()))))
        if not mine:
            return future.result()
        return _settle(future, lambda: getattr(self._ledger, method)(*args, **kwargs))

    def artifact(self, service: str, tag: str) -> Any:
        return self._ask("artifact", service, tag)

    # gates ask for the newest 5, 20 or 50 of the same history: it is read once, at the most any gate reads
    def deployments(self, service: str, environment: str, *, tag: str | None = None, limit: int = 20) -> Any:
        if limit > HISTORY:
            return self._ledger.deployments(service, environment, tag=tag, limit=limit)
        return self._ask("deployments", service, environment, tag=tag, limit=HISTORY)[:limit]

    def verifications(self, service: str, environment: str, *, tag: str | None = None, limit: int = 20) -> Any:
        if limit > HISTORY:
            return self._ledger.verifications(service, environment, tag=tag, limit=limit)
        return self._ask("verifications", service, environment, tag=tag, limit=HISTORY)[:limit]

    def current_artifact(self, service: str, environment: str) -> Any:
        return self._ask("current_artifact", service, environment)

    def latest_verified_tag(self, service: str, environment: str) -> Any:
        return self._ask("latest_verified_tag", service, environment)

    def latest_scan(self, service: str, tag: str, digest: str | None) -> Any:
        return self._ask("latest_scan", service, tag, digest)

    def latest_sbom(self, service: str, tag: str, digest: str | None) -> Any:
        return self._ask("latest_sbom", service, tag, digest)

    def lock(self, service: str, environment: str) -> Any:
        return self._ask("lock", service, environment)

    def hold(self, service: str, tag: str) -> Any:
        return self._ask("hold", service, tag)


class SharedRegistry:
    """A registry asked once per image and tag per evaluation. The gates run on event loops of their
    own threads: the first asker fetches, the others await the same answer from theirs."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._answers = _Answers()

    async def manifest(self, image: str, tag: str) -> ManifestInfo:
        future, mine = self._answers.claim((image, tag))
        if not mine:
            return await asyncio.wrap_future(future)
        try:
            info = await self._registry.manifest(image, tag)
        except asyncio.CancelledError:  # the asking gate ran out of time: the others must not wait forever
            future.set_exception(RegistryError(f"no answer for {image}:{tag} in time"))
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        future.set_result(info)
        return info
