"""The slash commands, independent of transport: Slack and `promobot shell` both call these.

Parsing is pure (``parse_promote`` …); ``CommandRouter`` turns a parsed
command into engine calls and a ``Reply``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import Block

from bot.promotions import PromotionService, UserError
from bot.states import PromotionStatus as S
from handlers import blocks as B
from storage.db import transaction
from storage import audit
from storage.models import EnvironmentLock

PROMOTE_HELP = """*`/promote`* moves an artifact to the next environment, with its gates and approvals.
• `/promote SERVICE` — the artifact verified in the environment before the next one
• `/promote SERVICE TAG` — that tag, to the environment after the one where it is verified
• `/promote SERVICE TAG to ENV` — name the target
• `/promote SERVICE TAG --check` — show every gate without requesting anything
• `/promote lock SERVICE ENV reason…` / `/promote unlock SERVICE ENV` — stop or allow promotions into ENV
Example: `/promote api-gateway 7a3f9c2 to production`"""

ROLLBACK_HELP = """*`/rollback`* brings back the last known-good artifact, through the same gates and approval.
• `/rollback SERVICE` — the artifact verified in the last environment before the current one
• `/rollback SERVICE TAG in ENV reason…` — a specific known-good tag, environment and reason
Example: `/rollback api-gateway in production error rate doubled after 7a3f9c2`"""

STATUS_HELP = """*`/status`* shows where every artifact is.
• `/status` — every service at a glance
• `/status SERVICE` — per environment: what runs there, its verification, what is pending
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
    return Reply(text=text, blocks=B.message(text))


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


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text or "")
    except ValueError:
        return (text or "").split()


def parse_promote(text: str) -> PromoteCommand | LockCommand | str:
    """``/promote`` text → a command, or "help"."""
    words = _words(text)
    if not words or words[0] in ("help", "-h", "--help"):
        return "help"
    if words[0] in ("lock", "unlock"):
        unlock = words[0] == "unlock"
        if len(words) < 3 or (not unlock and len(words) < 4):
            usage = "`/promote unlock SERVICE ENV`" if unlock else "`/promote lock SERVICE ENV reason…`"
            raise CommandError(f"Expected {usage}.")
        return LockCommand(words[1], words[2], " ".join(words[3:]), unlock)
    check = False
    rest = []
    for w in words:
        if w in ("--check", "-n", "--dry-run"):
            check = True
        elif w.startswith("-"):
            raise CommandError(f"Unknown option `{w}`. Expected `/promote SERVICE [TAG] [to ENV] [--check]`.")
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
        raise CommandError("Expected `/promote SERVICE [TAG] [to ENV] [--check]`, "
                           "e.g. `/promote api-gateway 7a3f9c2`.")
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
            if cmd.check_only:
                report = await self.service.check(cmd.service, cmd.tag, cmd.environment)
                return Reply(text=("eligible" if report.eligible else B.refusal_text(report)),
                             blocks=B.eligibility(report))
            result = await self.service.request(user, cmd.service, cmd.tag, cmd.environment)
        except UserError as exc:
            return text_reply(f":warning: {exc}")
        if result.outcome == "refused":
            if not result.report.results:
                return text_reply(f":no_entry: {result.message}")
            return Reply(text=B.refusal_text(result.report), blocks=B.refusal(result.report))
        return text_reply(f":white_check_mark: {B.esc(result.message)}")

    async def rollback(self, user: str, text: str) -> Reply:
        try:
            cmd = parse_rollback(text, is_tag=lambda w: self._looks_like_tag(text, w))
            if cmd == "help":
                return text_reply(ROLLBACK_HELP)
            result = await self.service.request(user, cmd.service, cmd.tag, cmd.environment, kind="rollback",
                                                reason=cmd.reason or None)
        except UserError as exc:
            return text_reply(f":warning: {exc}")
        if result.outcome == "refused":
            if not result.report.results:
                return text_reply(f":no_entry: {result.message}")
            return Reply(text=B.refusal_text(result.report, kind="rollback"),
                         blocks=B.refusal(result.report, kind="rollback"))
        return text_reply(f":white_check_mark: {B.esc(result.message)}")

    def _looks_like_tag(self, text: str, word: str) -> bool:
        service = _words(text)[0]
        if service in self.service.config.services and self.service.ledger.artifact(service, word) is not None:
            return True
        return bool(re.search(self.service.config.policy.immutable_tag_pattern, word))

    def _lock(self, user: str, cmd: LockCommand) -> Reply:
        self.service.service_config(cmd.service)
        self.service.environment_config(cmd.environment)
        now = self.service.clock()
        with transaction(self.service.engine) as s:
            existing = s.get(EnvironmentLock, (cmd.service, cmd.environment))
            if cmd.unlock:
                if existing is None:
                    return text_reply(f"{cmd.service} in {cmd.environment} is not locked.")
                s.delete(existing)
                audit.append(s, at=now, actor=user, action="environment.unlocked", service=cmd.service,
                             environment=cmd.environment, detail={"was_locked_by": existing.locked_by,
                                                                  "reason": existing.reason})
                return text_reply(f":unlock: Unlocked {cmd.service} in {cmd.environment}.")
            if existing is not None:
                return text_reply(f"{cmd.service} in {cmd.environment} is already locked by <@{existing.locked_by}> "
                                  f"since {existing.locked_at:%Y-%m-%d %H:%M} UTC: {B.esc(existing.reason)}")
            s.add(EnvironmentLock(service=cmd.service, environment=cmd.environment, locked_by=user,
                                  reason=cmd.reason, locked_at=now))
            audit.append(s, at=now, actor=user, action="environment.locked", service=cmd.service,
                         environment=cmd.environment, detail={"reason": cmd.reason})
        return text_reply(f":lock: Locked {cmd.service} in {cmd.environment}: {B.esc(cmd.reason)}. Every promotion "
                          f"into it is refused until `/promote unlock {cmd.service} {cmd.environment}`.")

    async def status(self, user: str, text: str) -> Reply:
        words = _words(text)
        if words and words[0] in ("help", "-h", "--help"):
            return text_reply(STATUS_HELP)
        try:
            if not words:
                return self._overview()
            return self._service_status(words[0])
        except UserError as exc:
            return text_reply(f":warning: {exc}")

    def _overview(self) -> Reply:
        ledger = self.service.ledger
        names = self.service.config.environment_names
        lines = []
        for svc in sorted(self.service.config.services):
            cells = [f"{env} `{B.esc(ledger.current_artifact(svc, env) or '—')}`" for env in names]
            lines.append(f"*{B.esc(svc)}*: " + " · ".join(cells))
        text = "\n".join(lines) or "No services configured."
        return Reply(text="Status of every service", blocks=[
            *(B.message(chunk)[0] for chunk in B._chunks(lines or [text]))][:45])

    def _service_status(self, name: str) -> Reply:
        self.service.service_config(name)
        ledger = self.service.ledger
        lines = [f"*{B.esc(name)}*"]
        for env in self.service.config.environment_names:
            tag = ledger.current_artifact(name, env)
            if tag is None:
                lines.append(f"• *{env}*: nothing deployed")
                continue
            dep = ledger.deployments(name, env, tag=tag, limit=1)
            ver = ledger.verifications(name, env, tag=tag, limit=1)
            verified = (f"verification {ver[0].result} {_ago(ver[0].finished_at, self.service.clock())}"
                        if ver else "not verified yet")
            deployed = f"deployed {_ago(dep[0].finished_at, self.service.clock())}" if dep else ""
            lock = ledger.lock(name, env)
            locked = f" · :lock: locked by <@{lock.locked_by}>: {B.esc(lock.reason)}" if lock else ""
            lines.append(f"• *{env}*: `{B.esc(tag)}` {deployed}, {verified}{locked}")
            active = self.service._active(name, env)
            if active is not None and not S(active.status).is_terminal:
                lines.append(f"    pending: `{active.id}` `{B.esc(active.tag)}` — {S(active.status).label.lower()}")
        return text_reply("\n".join(lines))


def _ago(then: datetime, now: datetime) -> str:
    minutes = int((now - then).total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min ago"
    if minutes < 48 * 60:
        return f"{minutes // 60} h ago"
    return f"{minutes // 1440} days ago"
