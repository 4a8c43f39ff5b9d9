"""Trivy's JSON report (``trivy image --format json``, SchemaVersion 2)."""

from __future__ import annotations

from typing import Any

from checks.reports.common import ReportError, describe, finding, list_of, need, severity

WHERE = "trivy report"


def parse(report: dict) -> list[dict[str, Any]]:
    if "SchemaVersion" not in report and "Results" not in report:
        raise ReportError(f"{WHERE}: expected Trivy JSON (SchemaVersion and Results), found {describe(report)}")
    need(
        report.get("SchemaVersion", 2) == 2,
        WHERE,
        f"SchemaVersion {report.get('SchemaVersion')!r} is not supported (expected 2)",
    )
    findings = []
    for i, result in enumerate(list_of(report, "Results", WHERE)):
        need(isinstance(result, dict), f"{WHERE}: Results[{i}]", "expected an object")
        for j, v in enumerate(list_of(result, "Vulnerabilities", f"{WHERE}: Results[{i}]")):
            at = f"{WHERE}: Results[{i}].Vulnerabilities[{j}]"
            need(isinstance(v, dict), at, "expected an object")
            for key in ("VulnerabilityID", "PkgName"):
                need(isinstance(v.get(key), str) and v[key], at, f"missing {key}")
            findings.append(
                finding(
                    v["VulnerabilityID"],
                    v["PkgName"],
                    v.get("InstalledVersion"),
                    v.get("FixedVersion"),
                    severity(v.get("Severity")),
                    v.get("Title") or v.get("Description"),
                )
            )
    return findings
