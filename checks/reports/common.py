"""What every report parser shares: the finding and component shapes, severities, and naming a document.

A vulnerability finding is ``{id, package, installed, fixed, severity, title}`` with
``severity`` one of CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN and ``fixed`` None when no fix
is known. Parsers may add:

- ``rule``: the SARIF rule id as the scanner wrote it (``id`` is the CVE or GHSA id in it);
- ``severity_from``: where the severity was read (the scanner's own rating, CVSS, the SARIF level);
- ``vex``: a CycloneDX VEX analysis ``{state, justification, response, detail}``. A finding whose
  state is in ``WAIVED_STATES`` is waived by the VEX: it is kept, shown as waived, and never blocks.

A component is ``{name, version, licenses, unknown_license}``: ``licenses`` holds one
expression string per license entry, all of which apply (AND); ``unknown_license`` is True
when the SBOM gives no license information. ``license_refs`` (when present) names the
``LicenseRef-*`` licenses the SBOM itself defines and this component uses: ``{id: name}``.
"""

from __future__ import annotations

from typing import Any

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
NO_LICENSE = {"", "NOASSERTION", "NONE"}
# CycloneDX impactAnalysisState values that say the finding does not affect the product
WAIVED_STATES = ("not_affected", "resolved", "resolved_with_pedigree", "false_positive")


class ReportError(ValueError):
    """The document is not a report of the claimed format; the message names what is wrong."""


def vex_waived(finding: dict[str, Any]) -> bool:
    """Whether a VEX analysis says this finding does not affect the product."""
    vex = finding.get("vex")
    return isinstance(vex, dict) and vex.get("state") in WAIVED_STATES


def severity(value: Any) -> str:
    text = str(value or "").strip().upper()
    # Grype's Negligible and CycloneDX's info/none are below LOW but still findings
    text = {"NEGLIGIBLE": "LOW", "INFO": "LOW", "NONE": "LOW"}.get(text, text)
    return text if text in SEVERITIES else "UNKNOWN"


def cvss_severity(score: Any) -> str | None:
    """A CVSS score mapped to the CVSS v3 qualitative bands (as GitHub maps ``security-severity``)."""
    try:
        s = float(score)
    except (TypeError, ValueError):
        return None
    if s >= 9.0:
        return "CRITICAL"
    if s >= 7.0:
        return "HIGH"
    if s >= 4.0:
        return "MEDIUM"
    return "LOW" if s > 0 else None


def first_line(text: Any, limit: int = 160) -> str:
    line = str(text or "").strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def finding(id: str, package: str, installed: Any, fixed: Any, severity: str, title: Any) -> dict[str, Any]:
    return {
        "id": id,
        "package": package,
        "installed": str(installed or ""),
        "fixed": str(fixed) if fixed else None,
        "severity": severity,
        "title": first_line(title),
    }


def component(name: str, version: Any, licenses: list[str]) -> dict[str, Any]:
    licenses = [lic.strip() for lic in licenses if lic and lic.strip().upper() not in NO_LICENSE]
    return {
        "name": name,
        "version": str(version) if version else None,
        "licenses": licenses,
        "unknown_license": not licenses,
    }


def need(cond: object, where: str, what: str) -> None:
    if not cond:
        raise ReportError(f"{where}: {what}")


def list_of(doc: dict, key: str, where: str, *, required: bool = False) -> list:
    value = doc.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise ReportError(f"{where}: {'missing' if value is None else 'expected a list for'} {key}")
    return value


def describe(doc: Any) -> str:
    """What a document looks like, for "expected X, found Y" messages."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}" if doc is not None else "JSON null"
    if "@context" in doc and "spdx" in str(doc.get("@context")).lower():
        return f"SPDX 3 JSON-LD (@context {doc['@context']})"
    if "spdxVersion" in doc:
        return f"an SPDX document ({doc.get('spdxVersion')})"
    if doc.get("bomFormat") == "CycloneDX":
        parts = [
            f"{len(doc[k])} {k}" for k in ("components", "services", "vulnerabilities") if isinstance(doc.get(k), list)
        ]
        return f"a CycloneDX {doc.get('specVersion', '')} document".replace("  ", " ") + (
            f" with {', '.join(parts)}" if parts else ""
        )
    if "SchemaVersion" in doc or "Results" in doc:
        return "a Trivy JSON report (SchemaVersion, Results)"
    if "matches" in doc:
        return "a Grype JSON report (matches)"
    if "runs" in doc:
        return f"a SARIF log (version {doc.get('version')})"
    keys = ", ".join(list(doc)[:5])
    return f"a JSON object with keys {keys}" if keys else "an empty JSON object"
