"""Grype's JSON report (``grype -o json``)."""

from __future__ import annotations

from typing import Any

from checks.reports.common import ReportError, describe, finding, list_of, need, severity

WHERE = "grype report"


def parse(report: dict) -> list[dict[str, Any]]:
    if "matches" not in report:
        raise ReportError(f"{WHERE}: expected Grype JSON (matches), found {describe(report)}")
    findings = []
    for i, m in enumerate(list_of(report, "matches", WHERE)):
        at = f"{WHERE}: matches[{i}]"
        need(isinstance(m, dict), at, "expected an object")
        vuln, art = m.get("vulnerability"), m.get("artifact")
        need(isinstance(vuln, dict) and vuln.get("id"), at, "missing vulnerability.id")
        need(isinstance(art, dict) and art.get("name"), at, "missing artifact.name")
        fix = vuln.get("fix") or {}
        # Grype lists every fixed version across release lines; its suggestion is the one for this install
        suggested = [
            d.get("fix", {}).get("suggestedVersion")
            for d in m.get("matchDetails") or []
            if isinstance(d, dict) and isinstance(d.get("fix"), dict)
        ]
        fixed = next((s for s in suggested if s), None) or ", ".join(fix.get("versions") or []) or None
        findings.append(
            finding(
                vuln["id"],
                art["name"],
                art.get("version"),
                fixed,
                severity(vuln.get("severity")),
                vuln.get("description"),
            )
        )
    return findings
