"""Licenses: no component of the artifact's SBOM needs a prohibited license.

An SPDX expression is acceptable when some choice among its OR branches avoids
every prohibited license (``MIT OR AGPL-3.0-only`` is, ``MIT AND
AGPL-3.0-only`` is not); all license entries of one component apply together.
Expressions that do not parse and names that are not SPDX ids are reported as
unknown: they do not fail the gate, but they are listed in the evidence.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from license_expression import ExpressionError, LicenseExpression, get_spdx_licensing

from checks.base import Gate, GateContext, GateResult
from checks.sbom_present import NEXT_STEP, latest_sbom

SHOWN = 5
_LICENSING = get_spdx_licensing()


@lru_cache(maxsize=4096)
def _parse(expression: str) -> LicenseExpression | str:
    """The parsed expression (ids normalised: ``AGPL-3.0`` is ``AGPL-3.0-only``), or why it does not parse."""
    try:
        return _LICENSING.parse(expression)
    except ExpressionError as exc:
        return f"does not parse: {exc}"


def _blockers(node: Any, prohibited: frozenset[str]) -> set[str]:
    """The prohibited ids that no choice in ``node`` avoids; empty when ``node`` is acceptable."""
    if isinstance(node, _LICENSING.OR):
        options = [_blockers(arg, prohibited) for arg in node.args]
        return set() if any(not b for b in options) else set().union(*options)
    if isinstance(node, _LICENSING.AND):
        return set().union(*(_blockers(arg, prohibited) for arg in node.args))
    # "GPL-2.0-only WITH Classpath-exception-2.0" is still GPL-2.0-only
    key = getattr(node, "license_symbol", node).key
    return {key} if key in prohibited else set()


def _normalised(ids: list[str]) -> frozenset[str]:
    out: set[str] = set()
    for i in filter(str.strip, ids):
        parsed = _parse(i)
        out.update([i] if isinstance(parsed, str) else _LICENSING.license_keys(parsed))
    return frozenset(out)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _label(c: dict[str, Any]) -> str:
    return f"{c.get('name')} {c['version']}" if c.get("version") else str(c.get("name"))


async def _evaluate(ctx: GateContext) -> GateResult:
    policy = ctx.config.policy
    sbom, named = latest_sbom(ctx)
    if sbom is None:
        if not policy.require_sbom:
            return GATE.passed("no SBOM to check licenses against")
        return GATE.failed(f"no SBOM recorded for {named}, so licenses cannot be checked", NEXT_STEP)

    prohibited = _normalised(policy.prohibited_licenses)
    violations, unknown, unlicensed = [], [], []
    for c in sbom.components:
        expressions = [e for e in c.get("licenses") or [] if e and e.strip()]
        if c.get("unknown_license") or not expressions:
            unlicensed.append(_label(c))
            continue
        blocked: dict[str, set[str]] = {}
        for expr in expressions:
            parsed = _parse(expr)
            if isinstance(parsed, str):
                unknown.append({"component": _label(c), "expression": expr, "problem": parsed})
                continue
            if b := _blockers(parsed, prohibited):
                blocked[expr] = b
            if odd := _LICENSING.unknown_license_keys(parsed):
                unknown.append(
                    {"component": _label(c), "expression": expr, "problem": "not SPDX license ids: " + ", ".join(odd)}
                )
        if blocked:
            violations.append(
                {
                    "component": _label(c),
                    "expression": " AND ".join(blocked),
                    "prohibited": sorted(set().union(*blocked.values())),
                }
            )

    evidence = {
        "format": sbom.format,
        "digest": sbom.digest,
        "components": len(sbom.components),
        "prohibited_licenses": list(policy.prohibited_licenses),
        "violations": violations,
        "unknown": unknown,
        "without_license": unlicensed,
    }
    if violations:
        shown = [
            f"{v['component']} (`{v['expression']}`) needs {', '.join(v['prohibited'])}" for v in violations[:SHOWN]
        ]
        more = f" and {len(violations) - SHOWN} more" if len(violations) > SHOWN else ""
        needs = _count(len(violations), "component needs", "components need")
        return GATE.failed(
            f"{needs} a prohibited license: {'; '.join(shown)}{more}",
            "Replace or remove these components (or obtain them under a license that is not "
            "prohibited), then rebuild and publish the new SBOM.",
            **evidence,
        )

    reason = (
        f"none of {len(sbom.components)} components needs a prohibited license"
        if prohibited
        else f"no licenses are prohibited by policy ({len(sbom.components)} components)"
    )
    if unknown:
        reason += f"; {_count(len(unknown), 'license entry is', 'license entries are')} not SPDX or do not parse"
    if unlicensed:
        reason += f"; {_count(len(unlicensed), 'component has', 'components have')} no license information"
    return GATE.passed(reason, **evidence)


GATE = Gate(name="licenses", title="Licenses", evaluate=_evaluate)
