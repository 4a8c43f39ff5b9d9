"""The slash commands, independent of transport: Slack and `promobot shell` both call these.

``CommandRouter`` turns a parsed command (``handlers.parsing``) into engine
calls and a ``Reply``. Every reply to a mistake says what was expected;
everything the user typed is escaped before it is shown.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import Block

from bot.engine.errors import UserError
from bot.engine.outcomes import DecisionResult
from bot.engine.service import PromotionService
from bot.offload import off_loop
from bot.text import esc
from handlers import blocks as B
from handlers.parsing import (
    PROMOTE_HELP,
    ROLLBACK_HELP,
    STATUS_HELP,
    CommandError,
    HelpRequest,
    HoldCommand,
    LockCommand,
    RevokeCommand,
    parse_promote,
    parse_rollback,
    words_of,
)
from storage.statuses import PromotionKind


@dataclass(frozen=True)
class Reply:
    text: str
    blocks: list[Block] = field(default_factory=list)
    public: bool = False
    # the blocks as Slack's JSON, rendered where the reply is made (off the event loop for the heavy ones)
    rendered: list[dict[str, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rendered", [b.to_dict() for b in self.blocks])

    def payload(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "blocks": self.rendered,
            "response_type": "in_channel" if self.public else "ephemeral",
        }


def text_reply(text: str) -> Reply:
    """A reply from mrkdwn the caller built (and escaped)."""
    return Reply(text=text, blocks=B.message(text))


def problem(exc: Exception) -> Reply:
    """A refusal or a mistake; its message may quote what the user typed, so it is escaped whole."""
    return text_reply(f":warning: {esc(exc)}")


# Gate evaluations and status screens worked on at once, each command its own lane. Past this many, a
# command waits its turn after its ack: under a burst the acknowledgements (three seconds, or the user sees
# an error) do not wait behind the work of answers (2,000 mixed commands from 50 clients: ack p99 246 ms
# unbounded, 170 ms with 16 at once, 130 ms with 4, as many answers a second), and response_url takes an
# answer for thirty minutes. /promote checks stuck on a slow registry or GitHub hold up neither /status nor
# the commands that evaluate nothing (lock, hold, revoke, help), which have no lane.
ANSWERS_AT_ONCE = 4


class CommandRouter:
    """Runs commands against the engine; used by the Slack listeners and the shell alike."""

    def __init__(self, service: PromotionService):
        self.service = service
        self._promoting = asyncio.Semaphore(ANSWERS_AT_ONCE)  # /promote SERVICE TAG [--check]: the gates
        self._rolling_back = asyncio.Semaphore(ANSWERS_AT_ONCE)  # /rollback: the gates
        self._reading = asyncio.Semaphore(ANSWERS_AT_ONCE)  # /status

    async def promote(self, user: str, text: str) -> Reply:
        try:
            cmd = parse_promote(text)
            if isinstance(cmd, HelpRequest):
                return text_reply(PROMOTE_HELP)
            if isinstance(cmd, (LockCommand, HoldCommand)):
                return await self._safeguard(user, cmd)
            if isinstance(cmd, RevokeCommand):
                revoked = await self.service.revoke_approval(cmd.promotion_id, user)
                return text_reply((":white_check_mark: " if revoked.changed else ":warning: ") + revoked.message)
            async with self._promoting:
                if cmd.check_only:
                    report = await self.service.check(
                        cmd.service, cmd.tag, cmd.environment, expedite_reason=cmd.expedite
                    )
                    return await off_loop(
                        lambda: Reply(
                            text=("eligible" if report.eligible else B.refusal_text(report)),
                            blocks=B.eligibility(report),
                        )
                    )
                result = await self.service.request(
                    user, cmd.service, cmd.tag, cmd.environment, expedite_reason=cmd.expedite
                )
        except UserError as exc:
            return problem(exc)
        if result.outcome == "refused":
            if not result.report.results:
                return text_reply(f":no_entry: {esc(result.message)}")
            return Reply(text=B.refusal_text(result.report), blocks=B.refusal(result.report))
        return text_reply(f":white_check_mark: {esc(result.message)}")

    async def rollback(self, user: str, text: str) -> Reply:
        try:
            # (is_tag may read the ledger: off the event loop)
            rollback = await off_loop(parse_rollback, text, is_tag=lambda w: self._looks_like_tag(text, w))
            if isinstance(rollback, HelpRequest):
                return text_reply(ROLLBACK_HELP)
            async with self._rolling_back:
                result = await self.service.request(
                    user,
                    rollback.service,
                    rollback.tag,
                    rollback.environment,
                    kind=PromotionKind.ROLLBACK.value,
                    reason=rollback.reason or None,
                )
        except UserError as exc:
            return problem(exc)
        if result.outcome == "refused":
            if not result.report.results:
                return text_reply(f":no_entry: {esc(result.message)}")
            return Reply(
                text=B.refusal_text(result.report, kind=PromotionKind.ROLLBACK.value),
                blocks=B.refusal(result.report, kind=PromotionKind.ROLLBACK.value),
            )
        return text_reply(f":white_check_mark: {esc(result.message)}")

    def _looks_like_tag(self, text: str, word: str) -> bool:
        service = words_of(text)[0]
        if service in self.service.config.services and self.service.ledger.artifact(service, word) is not None:
            return True
        return bool(re.search(self.service.config.policy.immutable_tag_pattern, word))

    async def _safeguard(self, user: str, cmd: LockCommand | HoldCommand) -> Reply:
        guards = self.service.safeguards
        result: DecisionResult
        if isinstance(cmd, LockCommand):
            result = (
                await guards.unlock(user, cmd.service, cmd.environment)
                if cmd.unlock
                else await asyncio.to_thread(guards.lock, user, cmd.service, cmd.environment, cmd.reason)
            )
        elif cmd.clear:
            result = await guards.clear_hold(user, cmd.service, cmd.tag, cmd.reason)
        else:
            result = await guards.hold(user, cmd.service, cmd.tag, cmd.reason)
        return text_reply(result.message)

    async def status(self, user: str, text: str) -> Reply:
        # reads the database and renders: off the event loop, which must stay free to acknowledge Slack
        async with self._reading:
            return await off_loop(self._status, text)

    def _status(self, text: str) -> Reply:
        words = words_of(text)
        if words and words[0] in ("help", "-h", "--help"):
            return text_reply(STATUS_HELP)
        try:
            if len(words) > 1:
                raise CommandError("Expected `/status` or `/status SERVICE` (one service).")
            if not words:
                rows = self.service.status.overview()
                return Reply(text=f"Status of {len(rows)} services", blocks=B.overview(rows, self.service.clock()))
            status = self.service.status.service_status(words[0])
            return Reply(text=B.service_status_text(status), blocks=B.service_status(status))
        except UserError as exc:
            return problem(exc)
