"""Expedited promotion: the promotion model's exception for critical security patches.

``/promote SERVICE TAG [to ENV] --expedite REASON…`` may skip an intermediate environment, its soak
and the deployment window (``checks.catalog.EXPEDITE_MAY_SKIP``). It never skips the artifact,
security, license, SBOM, lock or hold gates, and "previous environment verified" is checked in the
environment the artifact actually comes from. It needs ``policy.expedite``'s own approvers, more of
them than a normal promotion, never the requester; it is off unless ``policy.expedite`` is configured.
"""

from __future__ import annotations

from bot.engine import messages
from bot.engine.context import EngineContext
from bot.engine.errors import UserError
from checks.base import Expedite
from storage.models import Promotion
from storage.statuses import VerificationResult


def skipped_between(names: list[str], source: str | None, target: str) -> tuple[str, ...]:
    """The environments an artifact coming from ``source`` into ``target`` skips."""
    if source is None or source not in names or target not in names:
        return ()
    return tuple(names[names.index(source) + 1 : names.index(target)])


def of(ctx: EngineContext, p: Promotion) -> Expedite | None:
    """The expedite of a recorded promotion (what its gates skip when they run again), if it is one."""
    if not p.expedited:
        return None
    return Expedite(
        p.expedite_reason or "",
        skipped_between(ctx.config.environment_names, p.source_environment, p.target_environment),
    )


def plan(
    ctx: EngineContext, service: str, tag: str | None, environment: str | None, reason: str
) -> tuple[str, str | None, str, Expedite]:
    """(tag, source, target, expedite) for an expedited request; raises UserError saying what is missing.

    The target defaults to the last environment. The source is the nearest earlier environment whose
    latest verification of the tag passed: that is where "previous environment verified" is checked."""
    ctx.service_config(service)
    if ctx.config.policy.expedite is None:
        raise UserError(messages.expedite_not_configured())
    reason = " ".join((reason or "").split())
    if not reason:
        raise UserError(messages.expedite_needs_reason(service))
    if tag is None:
        raise UserError(messages.expedite_needs_tag(service))
    names = ctx.config.environment_names
    target = environment or names[-1]
    ctx.environment_config(target)
    earlier = names[: names.index(target)]
    if not earlier:
        raise UserError(messages.expedite_first_environment(target))
    source = next(
        (
            e
            for e in reversed(earlier)
            if (latest := next(iter(ctx.ledger.verifications(service, e, tag=tag, limit=1)), None)) is not None
            and latest.result == VerificationResult.PASSED
        ),
        earlier[-1],  # verified nowhere: the previous environment's gate says so
    )
    return tag, source, target, Expedite(reason, skipped_between(names, source, target))
