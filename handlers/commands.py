"""The slash commands, independent of transport: Slack and `promobot shell` both call these.

Parsing is pure (``parse_promote`` …); ``CommandRouter`` turns a parsed
command into engine calls and a ``Reply``. Every reply to a mistake says
what was expected; everything the user typed is escaped before it is shown.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import Block

from bot import service_status as status_of
from bot.holds import clear_hold, put_on_hold
from bot.promotions import PromotionService, UserError
from handlers import blocks as B
from bot.text import esc, literal, mention
from storage import audit
from storage.db import transaction
from storage.models import EnvironmentLock

PROMOTE_USAGE = "`/promote SERVICE [TAG] [to ENV] [--check]`"

PROMOTE_HELP = """*`/promote`* moves an artifact to the next environment, with its gates and approvals.
• `/promote SERVICE` — the artifact verified in the environment before the next one
• `/promote SERVICE TAG` — that tag, to the environment after the one where it is verified
• `/promote SERVICE TAG to ENV` — name the target
• `/promote SERVICE TAG --check` — show every gate without requesting anything
• `/promote revoke PROMOTION_ID` — take back your approval while the request still waits for others
• `/promote lock SERVICE ENV reason…` / `/promote unlock SERVICE ENV` — stop or allow every promotion into ENV
• `/promote hold SERVICE TAG reason…` — keep an artifact out of every environment
• `/promote hold clear SERVICE TAG reason…` — let it be promoted again (a verified rollback holds the \
artifact it replaced)
Examples: `/promote api-gateway 7a3f9c2 to production` · `/promote api-gateway --check` ·
`/promote lock api-gateway production incident INC-42` · `/promote hold clear api-gateway 7a3f9c2 fixed by 9b1e0d4`"""

ROLLBACK_HELP = """*`/rollback`* brings back the last known-good artifact, through the same gates and approval.
• `/rollback SERVICE` — the artifact verified in the last environment before the one running now
• `/rollback SERVICE TAG` — a specific tag that passed verification there before
• `/rollback SERVICE [TAG] in ENV reason…` — name the environment and say why
The card shows exactly which tag and digest will run and which it replaces. Once the rollback is verified, the \
replaced artifact is on hold until `/promote hold clear SERVICE TAG reason…`.
Examples: `/rollback api-gateway` · `/rollback api-gateway in production error rate doubled after 7a3f9c2`"""

STATUS_HELP = """*`/status`* shows where every artifact is.
• `/status` — every service at a glance
• `/status SERVICE` — per environment: what runs there, when it was deployed, its verification, soak and when \
it may move on, pending promotions and whom they wait for, locks, holds and freezes
Example: `/status api-gateway`"""


@dataclass(frozen=True)
class Reply:
    text: str
    blocks: list[Block] = field(default_factory=list)
    public: bool = False

    def payload(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": [b.to_dict() for b in self.blocks],
                "response_type": "in_channel" if self.public else "ephemeral"}


def text_reply(text: str) -> Reply:
    """A reply from mrkdwn the caller built (and escaped)."""
    return Reply(text=text, blocks=B.message(text))


def problem(exc: Exception) -> Reply:
    """A refusal or a mistake; its message may quote what the user typed, so it is escaped whole."""
    return text_reply(f":warning: {esc(exc)}")


class CommandError(UserError):
    """A command that does not parse; the message says what was expected."""


@dataclass(frozen=True)
class PromoteCommand:
    service: str
    tag: str | None = None
    environment: str | None = None
    check_only: bool = False


@dataclass(frozen=True)
class LockCommand:
    service: str
    environment: str
    reason: str = ""
    unlock: bool = False


@dataclass(frozen=True)
class HoldCommand:
    service: str
    tag: str
    reason: str
    clear: bool = False


@dataclass(frozen=True)
class RevokeCommand:
    promotion_id: str


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text or "")
    except ValueError:
        return (text or "").split()


def _parse_hold(words: list[str]) -> HoldCommand:
    clear = len(words) > 1 and words[1] == "clear"
    rest = words[2:] if clear else words[1:]
    if len(rest) < 3:
        usage = "`/promote hold clear SERVICE TAG reason…`" if clear else "`/promote hold SERVICE TAG reason…`"
        raise CommandError(f"Expected {usage}: a hold is placed and cleared with a reason, for the audit trail.")
    return HoldCommand(rest[0], rest[1], " ".join(rest[2:]), clear)


def parse_promote(text: str) -> PromoteCommand | LockCommand | HoldCommand | RevokeCommand | str:
    """``/promote`` text → a command, or "help"; raises CommandError saying what was expected."""
    words = _words(text)
    if not words or words[0] in ("help", "-h", "--help"):
        return "help"
    if words[0] in ("lock", "unlock"):
        unlock = words[0] == "unlock"
        if len(words) < 3 or (not unlock and len(words) < 4) or (unlock and len(words) > 3):
            usage = "`/promote unlock SERVICE ENV`" if unlock else "`/promote lock SERVICE ENV reason…`"
            raise CommandError(f"Expected {usage}.")
        return LockCommand(words[1], words[2], " ".join(words[3:]), unlock)
    if words[0] == "hold":
        return _parse_hold(words)
    if words[0] == "revoke":
        if len(words) != 2:
            raise CommandError("Expected `/promote revoke PROMOTION_ID` (the id is on the card's last line).")
        return RevokeCommand(words[1])
    check = False
    rest = []
    for w in words:
        if w in ("--check", "-n", "--dry-run"):
            check = True
        elif w.startswith("-"):
            raise CommandError(f"Unknown option `{w}`. Expected {PROMOTE_USAGE}.")
        else:
            rest.append(w)
    env = None
    if "to" in rest:
        i = rest.index("to")
        if i + 1 >= len(rest):
            raise CommandError("`to` needs an environment: `/promote SERVICE [TAG] to ENV`.")
        env = rest[i + 1]
        rest = rest[:i] + rest[i + 2:]
    if not rest or len(rest) > 2:
        raise CommandError(f"Expected {PROMOTE_USAGE}, e.g. `/promote api-gateway 7a3f9c2`; "
                           "`/promote help` lists everything.")
    return PromoteCommand(rest[0], rest[1] if len(rest) > 1 else None, env, check)


@dataclass(frozen=True)
class RollbackCommand:
    service: str
    tag: str | None = None
    environment: str | None = None
    reason: str = ""


def parse_rollback(text: str, *, is_tag: Any = lambda w: False) -> RollbackCommand | str:
    """``/rollback`` text → a command, or "help". ``is_tag`` tells a tag from the first word of a reason."""
    words = _words(text)
    if not words or words[0] in ("help", "-h", "--help"):
        return "help"
    service, rest = words[0], words[1:]
    tag = env = None
    if rest and rest[0] != "in" and is_tag(rest[0]):
        tag, rest = rest[0], rest[1:]
    if rest and rest[0] == "in":
        if len(rest) < 2:
            raise CommandError("`in` needs an environment: `/rollback SERVICE [TAG] in ENV [reason…]`.")
        env, rest = rest[1], rest[2:]
    return RollbackCommand(service, tag, env, " ".join(rest))


class CommandRouter:
    """Runs commands against the engine; used by the Slack listeners and the shell alike."""

    def __init__(self, service: PromotionService):
        self.service = service

    async def promote(self, user: str, text: str) -> Reply:
        try:
            cmd = parse_promote(text)
            if cmd == "help":
                return text_reply(PROMOTE_HELP)
            if isinstance(cmd, LockCommand):
                return self._lock(user, cmd)
            if isinstance(cmd, HoldCommand):
                return await self._hold(user, cmd)
            if isinstance(cmd, RevokeCommand):
                result = await self.service.revoke_approval(cmd.promotion_id, user)
                return text_reply((":white_check_mark: " if result.changed else ":warning: ") + result.message)
            if cmd.check_only:
                report = await self.service.check(cmd.service, cmd.tag, cmd.environment)
                return Reply(text=("eligible" if report.eligible else B.refusal_text(report)),
                             blocks=B.eligibility(report))
            result = await self.service.request(user, cmd.service, cmd.tag, cmd.environment)
        except UserError as exc:
            return problem(exc)
        if result.outcome == "refused":
            if not result.report.results:
                return text_reply(f":no_entry: {esc(result.message)}")
            return Reply(text=B.refusal_text(result.report), blocks=B.refusal(result.report))
        return text_reply(f":white_check_mark: {esc(result.message)}")

    async def rollback(self, user: str, text: str) -> Reply:
        try:
            cmd = parse_rollback(text, is_tag=lambda w: self._looks_like_tag(text, w))
            if cmd == "help":
                return text_reply(ROLLBACK_HELP)
            result = await self.service.request(user, cmd.service, cmd.tag, cmd.environment, kind="rollback",
                                                reason=cmd.reason or None)
        except UserError as exc:
            return problem(exc)
        if result.outcome == "refused":
            if not result.report.results:
                return text_reply(f":no_entry: {esc(result.message)}")
            return Reply(text=B.refusal_text(result.report, kind="rollback"),
                         blocks=B.refusal(result.report, kind="rollback"))
        return text_reply(f":white_check_mark: {esc(result.message)}")

    def _looks_like_tag(self, text: str, word: str) -> bool:
        service = _words(text)[0]
        if service in self.service.config.services and self.service.ledger.artifact(service, word) is not None:
            return True
        return bool(re.search(self.service.config.policy.immutable_tag_pattern, word))

    def _lock(self, user: str, cmd: LockCommand) -> Reply:
        self.service.service_config(cmd.service)
        self.service.environment_config(cmd.environment)
        now = self.service.clock()
        where = f"{esc(cmd.service)} in {esc(cmd.environment)}"
        with transaction(self.service.engine) as s:
            existing = s.get(EnvironmentLock, (cmd.service, cmd.environment))
            if cmd.unlock:
                if existing is None:
                    return text_reply(f"{where} is not locked; nothing changed.")
                s.delete(existing)
                audit.append(s, at=now, actor=user, action="environment.unlocked", service=cmd.service,
                             environment=cmd.environment, detail={"was_locked_by": existing.locked_by,
                                                                  "reason": existing.reason})
                return text_reply(f":unlock: Unlocked {where} (locked by {mention(existing.locked_by)} since "
                                  f"{existing.locked_at:%Y-%m-%d %H:%M} UTC: {literal(existing.reason)}).")
            if existing is not None:
                return text_reply(f"{where} is already locked by {mention(existing.locked_by)} since "
                                  f"{existing.locked_at:%Y-%m-%d %H:%M} UTC: {literal(existing.reason)}")
            s.add(EnvironmentLock(service=cmd.service, environment=cmd.environment, locked_by=user,
                                  reason=cmd.reason, locked_at=now))
            audit.append(s, at=now, actor=user, action="environment.locked", service=cmd.service,
                         environment=cmd.environment, detail={"reason": cmd.reason})
        return text_reply(f":lock: Locked {where}: {literal(cmd.reason)}. Every promotion into it, automatic ones "
                          f"too, is refused until `/promote unlock {esc(cmd.service)} {esc(cmd.environment)}`.")

    async def _hold(self, user: str, cmd: HoldCommand) -> Reply:
        svc = self.service.service_config(cmd.service)
        if self.service.ledger.artifact(cmd.service, cmd.tag) is None:
            raise UserError(f"No artifact `{cmd.tag}` is recorded for {cmd.service}. Expected "
                            f"`/promote hold{' clear' if cmd.clear else ''} SERVICE TAG reason…` with a built tag.")
        now = self.service.clock()
        what = f"{esc(cmd.service)} `{esc(cmd.tag)}`"
        with transaction(self.service.engine) as s:
            if cmd.clear:
                previous = clear_hold(s, service=cmd.service, tag=cmd.tag, reason=cmd.reason, user=user, now=now)
            else:
                placed = put_on_hold(s, service=cmd.service, tag=cmd.tag, reason=cmd.reason, held_by=user, now=now)
        if cmd.clear and previous is None:
            return text_reply(f"{what} is not on hold; nothing changed.")
        if not cmd.clear and not placed:
            hold = self.service.ledger.hold(cmd.service, cmd.tag)
            return text_reply(f"{what} is already on hold: {literal(hold.reason if hold else '')}")
        if cmd.clear:
            note = (f":white_check_mark: {mention(user)} cleared the hold on {what} ({literal(previous)}): "
                    f"{literal(cmd.reason)}. It may be promoted again.")
        else:
            note = (f":raised_hand: {mention(user)} put {what} on hold: {literal(cmd.reason)}. No environment "
                    f"takes it until `/promote hold clear {esc(cmd.service)} {esc(cmd.tag)} reason…`.")
        await self.service._alert(svc.channel, note)
        return text_reply(note)

    async def status(self, user: str, text: str) -> Reply:
        words = _words(text)
        if words and words[0] in ("help", "-h", "--help"):
            return text_reply(STATUS_HELP)
        try:
            if len(words) > 1:
                raise CommandError("Expected `/status` or `/status SERVICE` (one service).")
            if not words:
                rows = status_of.overview(self.service)
                return Reply(text=f"Status of {len(rows)} services", blocks=B.overview(rows, self.service.clock()))
            status = status_of.service_status(self.service, words[0])
            return Reply(text=B.service_status_text(status), blocks=B.service_status(status))
        except UserError as exc:
            return problem(exc)
