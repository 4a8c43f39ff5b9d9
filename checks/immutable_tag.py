"""Immutable tag: the tag names one build forever (a commit SHA), never a moving name."""

from __future__ import annotations

import re

from checks.base import Gate, GateContext, GateResult


async def _evaluate(ctx: GateContext) -> GateResult:
    policy = ctx.config.policy
    tag = ctx.tag
    if policy.is_mutable(tag):
        return GATE.failed(
            f"`{tag}` is a mutable tag: it can point at a different image tomorrow",
            "Promote the commit-SHA tag that your build pushed (e.g. 7a3f9c2).",
            tag=tag,
            mutable_tags=policy.refused_tags,
        )
    if not re.fullmatch(policy.immutable_tag_pattern, tag):
        return GATE.failed(
            f"`{tag}` does not match the immutable tag pattern `{policy.immutable_tag_pattern}`",
            "Tag images with the commit SHA and promote that tag.",
            tag=tag,
            pattern=policy.immutable_tag_pattern,
        )
    return GATE.passed(f"`{tag}` matches `{policy.immutable_tag_pattern}`", tag=tag)


GATE = Gate(name="immutable_tag", title="Immutable tag", evaluate=_evaluate)
