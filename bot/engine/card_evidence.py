"""What an approval card shows besides the gates, gathered each time the card is drawn.

``CardEvidenceNotifier`` wraps whichever notifier the app uses (Slack, shell), so every card,
whoever redraws it, carries the source history, the previous environment's record and the
target environment's recent stability. Rendering stays a pure function of the view.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime

from bot.config import PromobotConfig
from bot.engine.roles import CardEvidence, Notifier, PromotionView, SourceChanges, SourceHistory
from bot.offload import off_loop
from checks.base import Ledger, SourceHostError
from checks.deployment_window import window_state
from checks.soak_time import soak_progress
from storage.records import ArtifactRecord
from storage.statuses import PromotionKind

log = logging.getLogger(__name__)
ReadsTogether = Callable[[], AbstractContextManager[object]]
HISTORY = 5  # deployments and verifications per list on a card
HISTORY_TIMEOUT = 5.0  # a slow GitHub must not hold the card back


async def _changes(
    view: PromotionView, replaced: ArtifactRecord | None, history: SourceHistory | None
) -> tuple[SourceChanges | None, str | None]:
    """Commits since the artifact the target runs (``replaced``; a rollback: the commits it takes out)."""
    if not view.replaces_tag:
        return None, f"first deployment of {view.service} to {view.target_environment}"
    if replaced is None or not replaced.commit_sha or not view.source_commit:
        return None, "no source commit recorded for one of the artifacts"
    if replaced.commit_sha == view.source_commit:
        return None, f"same commit as `{view.replaces_tag}`"
    if history is None or not view.repository:
        return None, "commit history needs GitHub credentials"
    base, head = replaced.commit_sha, view.source_commit
    if view.kind == PromotionKind.ROLLBACK.value:
        base, head = head, base
    try:
        return await asyncio.wait_for(history.commits_between(view.repository, base, head), HISTORY_TIMEOUT), None
    except (TimeoutError, SourceHostError) as exc:
        return None, f"commit history unavailable ({str(exc) or 'GitHub did not answer in time'})"


def _recorded(
    view: PromotionView, *, config: PromobotConfig, ledger: Ledger, now: datetime, together: ReadsTogether
) -> tuple[ArtifactRecord | None, CardEvidence]:
    """What the ledger says for ``view``'s card (the artifact it replaces, and the evidence without the
    commits), its reads sharing one connection. Reads the database: call it off the event loop."""
    service, target = view.service, view.target_environment
    env = config.environment(target)
    with together():
        replaced = ledger.artifact(service, view.replaces_tag) if view.replaces_tag else None
        # a rollback's record is the artifact's own earlier life in the target environment
        previous = view.source_environment or (target if view.kind == PromotionKind.ROLLBACK.value else None)
        soak = None
        if view.source_environment and view.kind != PromotionKind.ROLLBACK.value:
            soak = soak_progress(ledger, service, view.tag, view.source_environment, env.soak_time, now)
        return replaced, CardEvidence(
            rolled_back_changes=view.kind == PromotionKind.ROLLBACK.value,
            replaces_digest=replaced.digest if replaced else None,
            previous_environment=previous,
            previous_deployments=tuple(ledger.deployments(service, previous, tag=view.tag, limit=HISTORY))
            if previous
            else (),
            previous_verifications=tuple(ledger.verifications(service, previous, tag=view.tag, limit=HISTORY))
            if previous
            else (),
            target_deployments=tuple(ledger.deployments(service, target, limit=HISTORY)),
            target_verifications=tuple(ledger.verifications(service, target, limit=HISTORY)),
            soak=soak,
            window=window_state(env, now),
            hold=ledger.hold(service, view.tag),
            now=now,
        )


async def gather(
    view: PromotionView,
    *,
    config: PromobotConfig,
    ledger: Ledger,
    history: SourceHistory | None,
    now: datetime,
    together: ReadsTogether = nullcontext,
) -> CardEvidence:
    """Read the evidence for ``view``'s card (the ledger on the readers' threads, the commits from GitHub);
    never raises for missing history, it says why instead."""
    replaced, evidence = await off_loop(_recorded, view, config=config, ledger=ledger, now=now, together=together)
    changes, note = await _changes(view, replaced, history)
    return replace(evidence, changes=changes, changes_note=note)


class CardEvidenceNotifier:
    """A Notifier that adds ``CardEvidence`` to each view, then hands it to the real notifier."""

    def __init__(
        self,
        inner: Notifier,
        *,
        config: PromobotConfig,
        ledger: Ledger,
        history: SourceHistory | None,
        clock: Callable[[], datetime],
        together: ReadsTogether = nullcontext,
    ):
        """``together()`` makes the ledger's reads inside it share one connection (``storage.db.reads_together``)."""
        self.inner = inner
        self._config, self._ledger, self._history, self._clock = config, ledger, history, clock
        self._together = together

    async def _with_evidence(self, view: PromotionView) -> PromotionView:
        if view.service not in self._config.services or view.target_environment not in self._config.environment_names:
            return view
        try:
            return replace(
                view,
                evidence=await gather(
                    view,
                    config=self._config,
                    ledger=self._ledger,
                    history=self._history,
                    now=self._clock(),
                    together=self._together,
                ),
            )
        except Exception:  # a card without the extras beats no card
            log.exception("could not gather card evidence for %s", view.id)
            return view

    async def promotion_requested(
        self, view: PromotionView, approver_users: list[str]
    ) -> tuple[str | None, str | None]:
        return await self.inner.promotion_requested(await self._with_evidence(view), approver_users)

    async def promotion_changed(self, view: PromotionView, note: str | None = None) -> None:
        await self.inner.promotion_changed(await self._with_evidence(view), note)

    async def note(self, view: PromotionView, note: str) -> None:
        await self.inner.note(view, note)

    async def alert(self, channel: str, text: str) -> None:
        await self.inner.alert(channel, text)

    async def tell(self, user: str, text: str) -> None:
        await self.inner.tell(user, text)

    def __getattr__(self, name: str):
        # anything else a concrete notifier offers (the shell's buttons) stays reachable
        return getattr(self.inner, name)
