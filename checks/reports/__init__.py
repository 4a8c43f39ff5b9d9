"""Turn raw scanner reports and SBOMs into the evidence the gates judge.

Pure functions, no I/O; one module per format. ``common`` documents the shapes: a finding
``{id, package, installed, fixed, severity, title}`` (plus ``rule``, ``severity_from`` and
``vex`` where the format has them) and a component ``{name, version, licenses,
unknown_license}`` (plus ``license_refs``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from checks.reports import cyclonedx, grype, sarif, spdx, trivy
from checks.reports.common import SEVERITIES, WAIVED_STATES, ReportError, describe, vex_waived

__all__ = ["SEVERITIES", "WAIVED_STATES", "ReportError", "describe", "parse_sbom", "parse_scan", "vex_waived"]

_SCANNERS: dict[str, Callable[[dict], list[dict[str, Any]]]] = {
    "trivy": trivy.parse,
    "grype": grype.parse,
    "sarif": sarif.parse,
    "cyclonedx": cyclonedx.parse_vulnerabilities,
}
_SBOMS: dict[str, Callable[[dict], list[dict[str, Any]]]] = {
    "cyclonedx": cyclonedx.parse_sbom,
    "spdx": spdx.parse_sbom,
}


def parse_scan(scanner: str, report: Any) -> list[dict[str, Any]]:
    """Normalise a trivy, grype, sarif or cyclonedx (VEX) report into findings.

    Raises ReportError naming what was expected and what ``report`` is instead.
    """
    parse = _SCANNERS.get(str(scanner).lower())
    if parse is None:
        raise ReportError(f"unknown scanner {scanner!r} (expected one of {', '.join(_SCANNERS)})")
    if not isinstance(report, dict):
        raise ReportError(f"{scanner} report: expected a JSON object, found {describe(report)}")
    return parse(report)


def parse_sbom(fmt: str, sbom: Any) -> list[dict[str, Any]]:
    """Normalise a CycloneDX JSON or SPDX 2.x JSON SBOM into components.

    Raises ReportError when ``sbom`` is not an SBOM of that format.
    """
    parse = _SBOMS.get(str(fmt).lower())
    if parse is None:
        raise ReportError(f"unknown SBOM format {fmt!r} (expected cyclonedx or spdx)")
    if not isinstance(sbom, dict):
        raise ReportError(f"{fmt} sbom: expected a JSON object, found {describe(sbom)}")
    return parse(sbom)
