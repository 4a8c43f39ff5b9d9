"""What people type after ``/promote`` and ``/rollback``, parsed by pure functions, and the help texts.

A command that does not parse raises ``CommandError`` saying what was expected.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from bot.engine.errors import UserError

PROMOTE_USAGE = "`/promote SERVICE [TAG] [to ENV] [--check] [--expedite REASON…]`"
EXPEDITE_USAGE = "`/promote SERVICE TAG [to ENV] [--check] --expedite REASON…`"

PROMOTE_HELP = """*`/promote`* moves an artifact to the next environment, with its gates and approvals.
• `/promote SERVICE` — the artifact verified in the environment before the next one
• `/promote SERVICE TAG` — that tag, to the environment after the one where it is verified
• `/promote SERVICE TAG to ENV` — name the target
• `/promote SERVICE TAG --check` — show every gate without requesting anything
• `/promote SERVICE TAG [to ENV] --expedite REASON…` — a critical security patch: may skip an intermediate \
environment, its soak and the deployment window (never the artifact, security, license, SBOM, lock or hold \
gates); needs the policy.expedite approvers. Without `to ENV` it goes to the last environment.
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


class CommandError(UserError):
    """A command that does not parse; the message says what was expected."""


@dataclass(frozen=True)
class HelpRequest:
    """``/promote help`` (or nothing at all): show the usage."""


@dataclass(frozen=True)
class PromoteCommand:
    service: str
    tag: str | None = None
    environment: str | None = None
    check_only: bool = False
    expedite: str | None = None  # the reason of an expedited promotion


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


_SHELL_SPACE = re.compile(r"[ \t\r\n]+")  # what shlex splits on (a no-break space stays inside a word)


def words_of(text: str) -> list[str]:
    """The words of a command, quotes as a shell reads them (``shlex``); without quotes or backslashes, a
    plain split on the same spaces, which is what shlex would give, at a fraction of its cost."""
    text = text or ""
    if not any(c in text for c in "'\"\\"):
        return [w for w in _SHELL_SPACE.split(text) if w]
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def reason_of(words: list[str]) -> str:
    """The words of a reason as one line; empty when they are only quotes or spaces."""
    return " ".join(" ".join(words).split())


def _parse_hold(words: list[str]) -> HoldCommand:
    clear = len(words) > 1 and words[1] == "clear"
    rest = words[2:] if clear else words[1:]
    if len(rest) < 3 or not reason_of(rest[2:]):
        usage = "`/promote hold clear SERVICE TAG reason…`" if clear else "`/promote hold SERVICE TAG reason…`"
        raise CommandError(f"Expected {usage}: a hold is placed and cleared with a reason, for the audit trail.")
    return HoldCommand(rest[0], rest[1], reason_of(rest[2:]), clear)


def parse_promote(text: str) -> PromoteCommand | LockCommand | HoldCommand | RevokeCommand | HelpRequest:
    """``/promote`` text → a command; raises CommandError saying what was expected."""
    words = words_of(text)
    if not words or words[0] in ("help", "-h", "--help"):
        return HelpRequest()
    if words[0] in ("lock", "unlock"):
        unlock = words[0] == "unlock"
        if len(words) < 3 or (not unlock and not reason_of(words[3:])) or (unlock and len(words) > 3):
            if unlock:
                raise CommandError("Expected `/promote unlock SERVICE ENV`.")
            raise CommandError(
                "Expected `/promote lock SERVICE ENV reason…`: a lock needs a reason, so that people "
                "know why and when it may be lifted."
            )
        return LockCommand(words[1], words[2], reason_of(words[3:]), unlock)
    if words[0] == "hold":
        return _parse_hold(words)
    if words[0] == "revoke":
        if len(words) != 2:
            raise CommandError("Expected `/promote revoke PROMOTION_ID` (the id is on the card's last line).")
        return RevokeCommand(words[1])
    check = False
    expedite: str | None = None
    if "--expedite" in words:  # everything after it is the reason
        i = words.index("--expedite")
        words, after = words[:i], words[i + 1 :]
        check = any(w in ("--check", "-n", "--dry-run") for w in after)
        expedite = reason_of([w for w in after if w not in ("--check", "-n", "--dry-run")])
        if not expedite:
            raise CommandError(
                f"Expected {EXPEDITE_USAGE}: an expedited promotion needs a reason, for the approvers and the "
                "audit trail."
            )
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
        rest = rest[:i] + rest[i + 2 :]
    if not rest or len(rest) > 2:
        raise CommandError(
            f"Expected {PROMOTE_USAGE}, e.g. `/promote api-gateway 7a3f9c2`; `/promote help` lists everything."
        )
    if expedite is not None and len(rest) < 2:
        raise CommandError(f"Expected {EXPEDITE_USAGE}: name the patched artifact's tag.")
    return PromoteCommand(rest[0], rest[1] if len(rest) > 1 else None, env, check, expedite)


@dataclass(frozen=True)
class RollbackCommand:
    service: str
    tag: str | None = None
    environment: str | None = None
    reason: str = ""


def parse_rollback(text: str, *, is_tag: Callable[[str], bool] = lambda w: False) -> RollbackCommand | HelpRequest:
    """``/rollback`` text → a command. ``is_tag`` tells a tag from the first word of a reason."""
    words = words_of(text)
    if not words or words[0] in ("help", "-h", "--help"):
        return HelpRequest()
    service, rest = words[0], words[1:]
    tag = env = None
    if rest and rest[0] != "in" and is_tag(rest[0]):
        tag, rest = rest[0], rest[1:]
    if rest and rest[0] == "in":
        if len(rest) < 2:
            raise CommandError("`in` needs an environment: `/rollback SERVICE [TAG] in ENV [reason…]`.")
        env, rest = rest[1], rest[2:]
    return RollbackCommand(service, tag, env, " ".join(rest))
