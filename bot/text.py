"""Text that reaches Slack: user input is escaped, never interpreted."""

from __future__ import annotations

import re
from collections.abc import Iterable

SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
SLACK_GROUP = re.compile(r"^S[A-Z0-9]{2,}$")


def esc(text: object) -> str:
    """Escape for mrkdwn: no mentions (<!channel>), links or broken formatting from input."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, with an ellipsis when cut (Slack refuses longer texts)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def literal(text: object) -> str:
    """Free text (a reason) inside mrkdwn: escaped and shown as inline code, so that
    ``*bold*`` or a stray backtick cannot change the formatting around it."""
    flat = " ".join(str(text).split()).replace("`", "ˋ")
    return f"`{esc(flat)}`" if flat else "—"


def mention(user: object) -> str:
    """``<@U…>`` for a recorded Slack user id; anything else is shown escaped, never as markup."""
    return f"<@{user}>" if SLACK_USER.match(str(user)) else esc(user)


def approver_mention(ident: str) -> str:
    """A configured approver: a user (``<@U…>``) or a user group (``<!subteam^S…>``)."""
    return f"<!subteam^{ident}>" if SLACK_GROUP.match(ident) else mention(ident)


def approver_mentions(idents: Iterable[str], sep: str = ", ") -> str:
    """Every configured approver, users and groups, as mentions."""
    return sep.join(approver_mention(a) for a in idents)


def evidence_text(text: str, evidence: dict) -> str:
    """A gate's sentence for mrkdwn: escaped; the reason a person typed (evidence ``lock_reason``,
    ``hold_reason``) quoted as a literal; only the users the gate recorded (``locked_by``, ``held_by``)
    left as mentions."""
    out = esc(text)
    for key in ("lock_reason", "hold_reason"):
        reason = evidence.get(key)
        if isinstance(reason, str) and reason.strip() and esc(reason) in out:
            i = out.rindex(esc(reason))
            out = out[:i] + literal(reason) + out[i + len(esc(reason)) :]
    for key in ("locked_by", "held_by"):
        user = evidence.get(key)
        if isinstance(user, str) and SLACK_USER.match(user):
            out = out.replace(esc(f"<@{user}>"), f"<@{user}>")
    return out


def link(url: str | None, label: str) -> str:
    """``<url|label>`` for a plain http(s) URL; only the label (already mrkdwn) for anything else,
    so a reported URL cannot close the link and smuggle markup in."""
    if url and re.match(r"^https?://[^\s<>|]+$", url):
        return f"<{url}|{label}>"
    return label
