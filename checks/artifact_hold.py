"""Artifact hold: an artifact that was rolled back (or held by hand) stays out until the hold is cleared."""

from __future__ import annotations

from bot.text import SLACK_USER
from checks.base import Gate, GateContext, GateResult


async def _evaluate(ctx: GateContext) -> GateResult:
    hold = ctx.ledger.hold(ctx.service, ctx.tag)
    if hold is None:
        return GATE.passed(f"`{ctx.tag}` is not on hold")
    who = ""
    if hold.held_by:
        who = f" by <@{hold.held_by}>" if SLACK_USER.match(hold.held_by) else f" by {hold.held_by}"
    when = f" since {hold.held_at:%Y-%m-%d %H:%M} UTC" if hold.held_at else ""
    return GATE.failed(
        f"`{ctx.tag}` is on hold{who}{when}: {hold.reason}",
        f"Fix the cause, then clear the hold with a reason: "
        f"`/promote hold clear {ctx.service} {ctx.tag} why it is safe again`.",
        held_by=hold.held_by,
        held_at=hold.held_at.isoformat() if hold.held_at else None,
        hold_reason=hold.reason,
    )


GATE = Gate(name="artifact_hold", title="Artifact hold", evaluate=_evaluate)
