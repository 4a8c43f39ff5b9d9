"""Licenses: no component of the artifact's SBOM needs a prohibited license.

An SPDX expression is acceptable when some choice among its OR branches avoids
every prohibited license (``MIT OR AGPL-3.0-only`` is, and the card names MIT as
the branch that allowed it; ``MIT AND AGPL-3.0-only`` is not); all license entries
of one component apply together. License names that are not SPDX ids (``GPLv3+``,
``Apache License 2.0``) are read as the SPDX id license-expression's data gives them
(``checks.license_terms``), and a ``LicenseRef-*`` that the SBOM defines is a known
custom license. What cannot be identified is governed by ``policy.unknown_licenses``:
``allow`` and ``warn`` let it through (warn names it on the card), ``block`` refuses a
component that cannot avoid it. A component without any license information is listed
and never refused here.
"""

from __future__ import annotations

from typing import Any

from bot.text import clip
from checks.base import Gate, GateContext, GateResult
from checks.license_terms import judge, normalise, read
from checks.sbom_present import NEXT_STEP, latest_sbom

SHOWN = 5


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _label(c: dict[str, Any]) -> str:
    return f"{c.get('name')} {c['version']}" if c.get("version") else str(c.get("name"))


def _capped(items: list[str], sep: str = ", ") -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return sep.join(items[:SHOWN]) + more


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _examine(components: Any, prohibited: frozenset[str], block_unknown: bool) -> dict[str, list]:
    found: dict[str, list] = {
        k: [] for k in ("violations", "unknown", "without_license", "read_as", "custom", "choices")
    }
    for c in components:
        label = _label(c)
        expressions = [e for e in c.get("licenses") or [] if e and e.strip()]
        if c.get("unknown_license") or not expressions:
            found["without_license"].append(label)
            continue
        defined = c.get("license_refs") or {}
        refused: dict[str, tuple[str, set[str], set[str]]] = {}
        for expr in expressions:
            reading = read(expr, defined)
            verdict = judge(reading, prohibited, block_unknown=block_unknown)
            if reading.problem:
                found["unknown"].append(
                    {"component": label, "expression": expr, "license": expr, "problem": reading.problem}
                )
            for term in reading.terms:
                entry = {"component": label, "expression": expr, "license": term.text}
                if term.how == "unknown":
                    found["unknown"].append({**entry, "problem": term.note})
                elif term.how == "name":
                    found["read_as"].append({**entry, "spdx": term.key})
                elif term.how == "sbom":
                    found["custom"].append({**entry, "id": term.text, "name": term.note})
            found["choices"] += [{"component": label, **choice} for choice in verdict.choices]
            if not verdict.ok:
                shown = reading.render(reading.tree, ids=True) if reading.tree is not None else expr
                refused[expr] = (shown, verdict.prohibited, verdict.unidentified)
        if refused:
            violation = {
                "component": label,
                "expression": " AND ".join(refused),
                "prohibited": sorted(set().union(*(p for _, p, _ in refused.values()))),
                "unidentified": sorted(set().union(*(u for _, _, u in refused.values()))),
            }
            read_as = " AND ".join(shown for shown, _, _ in refused.values())
            if read_as != violation["expression"]:
                violation["read_as"] = read_as
            found["violations"].append(violation)
    return found


def _violation(v: dict[str, Any]) -> str:
    unknown = [f"`{u}`" for u in v["unidentified"]]
    needs = list(v["prohibited"])
    if unknown:
        needs.append((", ".join(unknown[:-1]) + " and " if len(unknown) > 1 else "") + unknown[-1])
        needs[-1] += ", which cannot be identified"
    read_as = f", read as {v['read_as']}" if v.get("read_as") else ""
    return f"{v['component']} (`{v['expression']}`{read_as}) needs {', '.join(needs)}"


def _notes(found: dict[str, list], setting: str) -> list[str]:
    """What a person should see even when the gate passes, most important first: unknown licenses
    (with the policy that let them through), the OR choices that mattered, names read as ids,
    custom licenses, components without license information."""
    notes = []
    if found["unknown"]:
        where: dict[str, list[str]] = {}
        for u in found["unknown"]:
            where.setdefault(u["license"], [])
            if u["component"] not in where[u["license"]]:
                where[u["license"]].append(u["component"])
        what = _capped([f"`{clip(lic, 80)}` in {_capped(names)}" for lic, names in where.items()], "; ")
        verb = "license cannot" if len(where) == 1 else "licenses cannot"
        notes.append(f"{len(where)} {verb} be identified (policy.unknown_licenses: {setting}): {what}")
    decided = [ch for ch in found["choices"] if ch["refused"]]
    if decided:
        notes.append(
            _capped(
                [
                    f"{ch['component']} is allowed through {clip(ch['allowed_by'], 80)} (not {clip(ch['refused'], 80)})"
                    for ch in decided
                ],
                "; ",
            )
        )
    if found["read_as"]:
        names = _unique([f"{clip(r['license'], 80)} as {r['spdx']}" for r in found["read_as"]])
        notes.append(f"license names read as SPDX ids: {_capped(names)}")
    if found["custom"]:
        custom = _unique([f"{x['id']} “{clip(x['name'], 80)}”" for x in found["custom"]])
        notes.append(f"custom licenses defined in the SBOM: {_capped(custom)}")
    if found["without_license"]:
        notes.append(
            _count(len(found["without_license"]), "component has", "components have") + " no license information"
        )
    return notes


async def _evaluate(ctx: GateContext) -> GateResult:
    policy = ctx.config.policy
    sbom, named = latest_sbom(ctx)
    if sbom is None:
        if not policy.require_sbom:
            return GATE.passed("no SBOM to check licenses against")
        return GATE.failed(f"no SBOM recorded for {named}, so licenses cannot be checked", NEXT_STEP)

    prohibited = normalise(list(policy.prohibited_licenses))
    setting = policy.unknown_licenses
    found = _examine(sbom.components, prohibited, block_unknown=setting == "block")
    evidence = {
        "format": sbom.format,
        "digest": sbom.digest,
        "components": len(sbom.components),
        "prohibited_licenses": list(policy.prohibited_licenses),
        "unknown_licenses": setting,
        **found,
    }
    violations = found["violations"]
    if violations:
        unidentified = any(v["unidentified"] for v in violations)
        what = {
            (True, False): "a prohibited license",
            (False, True): f"a license that cannot be identified (policy.unknown_licenses: {setting})",
        }.get(
            (any(v["prohibited"] for v in violations), unidentified),
            f"a prohibited license or one that cannot be identified (policy.unknown_licenses: {setting})",
        )
        needs = _count(len(violations), "component needs", "components need")
        step = (
            "Replace or remove these components (or obtain them under a license that is not "
            "prohibited), then rebuild and publish the new SBOM."
        )
        if unidentified:
            step += " For a license that cannot be identified, write its SPDX id (or a LicenseRef the SBOM defines)."
        return GATE.failed(f"{needs} {what}: {_capped([_violation(v) for v in violations], '; ')}", step, **evidence)

    reason = (
        f"none of {len(sbom.components)} components needs a prohibited license"
        if prohibited
        else f"no licenses are prohibited by policy ({len(sbom.components)} components)"
    )
    return GATE.passed("; ".join([reason, *_notes(found, setting)]), **evidence)


GATE = Gate(name="licenses", title="Licenses", evaluate=_evaluate)
