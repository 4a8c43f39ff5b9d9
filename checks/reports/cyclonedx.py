"""CycloneDX JSON: a vulnerability report or VEX (``vulnerabilities``), and an SBOM (components' licenses).

VEX: ``vulnerabilities[].analysis.state`` says what the vulnerability means for the product.
``not_affected``, ``resolved``, ``resolved_with_pedigree`` and ``false_positive`` are kept with
the analysis (justification, response, detail) and never block; ``exploitable``, ``in_triage``,
any other state and a missing analysis are findings.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from checks.reports.common import (
    SEVERITIES,
    ReportError,
    component,
    cvss_severity,
    describe,
    finding,
    first_line,
    list_of,
    need,
    severity,
)

_RECOMMEND = re.compile(r"^Upgrade \S+ to version (\S+)$")


def walk_components(node: dict, path: str = "") -> list[tuple[str, Any]]:
    """(path, item) for every component and service of a CycloneDX BOM, nested ones included.

    ``metadata.component`` is left out: it is the subject of the BOM, not one of its parts.
    """
    out = []
    for key in ("components", "services"):
        items = node.get(key)
        for i, item in enumerate(items if isinstance(items, list) else []):
            out.append((f"{path}{key}[{i}]", item))
            if isinstance(item, dict):
                out.extend(walk_components(item, f"{path}{key}[{i}]."))
    return out


def _purl_name_version(ref: str) -> tuple[str, str]:
    """Name and version from a bom-ref that is a purl (or a BOM-link ending in one)."""
    ref = ref.split("#", 1)[-1]
    if not ref.startswith("pkg:"):
        return ref, ""
    path = ref.split("?", 1)[0].split("#", 1)[0]
    path, _, version = path.partition("@")
    return unquote(path.rsplit("/", 1)[-1]), unquote(version)


def _analysis(v: dict) -> dict[str, Any] | None:
    analysis = v.get("analysis")
    if not isinstance(analysis, dict) or not analysis.get("state"):
        return None
    response = analysis.get("response")
    return {
        "state": str(analysis["state"]),
        "justification": str(analysis.get("justification") or "") or None,
        "response": [str(r) for r in response] if isinstance(response, list) else [],
        "detail": first_line(analysis.get("detail"), 200) or None,
    }


def parse_vulnerabilities(report: dict) -> list[dict[str, Any]]:
    where = "cyclonedx report"
    if report.get("bomFormat") != "CycloneDX":
        raise ReportError(f"{where}: expected CycloneDX JSON (bomFormat CycloneDX), found {describe(report)}")
    if "vulnerabilities" not in report:
        raise ReportError(
            f"{where}: not a vulnerability report: expected a vulnerabilities section, found "
            f"{describe(report)}; an SBOM goes in sbom.published"
        )
    subject = (report.get("metadata") or {}).get("component")
    parts = [c for _, c in walk_components(report)] + ([subject] if isinstance(subject, dict) else [])
    refs = {
        c.get("bom-ref"): (c.get("name", ""), c.get("version", ""))
        for c in parts
        if isinstance(c, dict) and c.get("bom-ref")
    }
    findings = []
    for i, v in enumerate(list_of(report, "vulnerabilities", where)):
        at = f"{where}: vulnerabilities[{i}]"
        need(isinstance(v, dict) and isinstance(v.get("id"), str) and v["id"], at, "missing id")
        ranks = [
            severity(r.get("severity")) if r.get("severity") else (cvss_severity(r.get("score")) or "UNKNOWN")
            for r in v.get("ratings") or []
            if isinstance(r, dict)
        ]
        known = [s for s in ranks if s != "UNKNOWN"]
        rank = min(known, key=SEVERITIES.index) if known else "UNKNOWN"
        fix = _RECOMMEND.match(str(v.get("recommendation") or "").strip())
        title = v.get("description") or v.get("detail") or ""
        vex = _analysis(v)
        affects = [a for a in v.get("affects") or [] if isinstance(a, dict) and a.get("ref")] or [{"ref": ""}]
        for a in affects:  # one finding per affected component, as the other scanners report
            ref = str(a["ref"])
            name, version = refs.get(ref) or refs.get(ref.split("#", 1)[-1]) or _purl_name_version(ref)
            affected = [
                x.get("version")
                for x in a.get("versions") or []
                if isinstance(x, dict) and x.get("status", "affected") == "affected" and x.get("version")
            ]
            f = finding(v["id"], name, affected[0] if affected else version, fix.group(1) if fix else None, rank, title)
            if vex:
                f["vex"] = vex
            findings.append(f)
    return findings


def parse_sbom(sbom: dict) -> list[dict[str, Any]]:
    where = "cyclonedx sbom"
    if sbom.get("bomFormat") != "CycloneDX":
        raise ReportError(f"{where}: expected CycloneDX JSON (bomFormat CycloneDX), found {describe(sbom)}")
    for key in ("components", "services"):
        list_of(sbom, key, where)
    components = []
    for path, c in walk_components(sbom):
        need(isinstance(c, dict) and isinstance(c.get("name"), str), f"{where}: {path}", "missing name")
        licenses = []
        for entry in c.get("licenses") or []:
            if not isinstance(entry, dict):
                continue
            lic = entry.get("license") or {}
            licenses.append(entry.get("expression") or lic.get("id") or lic.get("name") or "")
        components.append(component(c["name"], c.get("version"), licenses))
    return components
