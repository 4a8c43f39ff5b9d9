"""Turn raw scanner reports and SBOMs into the evidence the gates judge.

Pure functions, no I/O. A vulnerability finding is
``{id, package, installed, fixed, severity, title}`` with ``severity`` one of
CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN and ``fixed`` None when no fix is known.
A component is ``{name, version, licenses, unknown_license}``: ``licenses``
holds one expression string per license entry, all of which apply (AND);
``unknown_license`` is True when the SBOM gives no license information.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
_NO_LICENSE = {"", "NOASSERTION", "NONE"}


class ReportError(ValueError):
    """The document is not a report of the claimed format; the message names what is wrong."""


def _severity(value: Any) -> str:
    text = str(value or "").strip().upper()
    # Grype's Negligible and CycloneDX's info/none are below LOW but still findings
    text = {"NEGLIGIBLE": "LOW", "INFO": "LOW", "NONE": "LOW"}.get(text, text)
    return text if text in SEVERITIES else "UNKNOWN"


def _cvss_severity(score: Any) -> str | None:
    """A CVSS score mapped as GitHub code scanning maps ``security-severity``."""
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


def _first_line(text: Any, limit: int = 160) -> str:
    line = str(text or "").strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _finding(id: str, package: str, installed: Any, fixed: Any, severity: str, title: Any) -> dict[str, Any]:
    return {
        "id": id,
        "package": package,
        "installed": str(installed or ""),
        "fixed": str(fixed) if fixed else None,
        "severity": severity,
        "title": _first_line(title),
    }


def _need(cond: object, where: str, what: str) -> None:
    if not cond:
        raise ReportError(f"{where}: {what}")


def _list(doc: dict, key: str, where: str, *, required: bool = False) -> list:
    value = doc.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise ReportError(f"{where}: {'missing' if value is None else 'expected a list for'} {key}")
    return value


def _hint(report: Any) -> str:
    """Name the format the document looks like, for a report sent under the wrong scanner."""
    if not isinstance(report, dict):
        return ""
    for key, name in (("SchemaVersion", "trivy"), ("matches", "grype"), ("runs", "sarif"), ("bomFormat", "cyclonedx")):
        if key in report:
            return f" (this looks like a {name} report)"
    return ""


# --- scanners -----------------------------------------------------------------


def _trivy(report: dict) -> list[dict[str, Any]]:
    where = "trivy report"
    _need("SchemaVersion" in report or "Results" in report, where, f"missing SchemaVersion and Results{_hint(report)}")
    _need(
        report.get("SchemaVersion", 2) == 2,
        where,
        f"SchemaVersion {report.get('SchemaVersion')!r} is not supported (expected 2)",
    )
    findings = []
    for i, result in enumerate(_list(report, "Results", where)):
        _need(isinstance(result, dict), f"{where}: Results[{i}]", "expected an object")
        for j, v in enumerate(_list(result, "Vulnerabilities", f"{where}: Results[{i}]")):
            at = f"{where}: Results[{i}].Vulnerabilities[{j}]"
            _need(isinstance(v, dict), at, "expected an object")
            for key in ("VulnerabilityID", "PkgName"):
                _need(isinstance(v.get(key), str) and v[key], at, f"missing {key}")
            findings.append(
                _finding(
                    v["VulnerabilityID"],
                    v["PkgName"],
                    v.get("InstalledVersion"),
                    v.get("FixedVersion"),
                    _severity(v.get("Severity")),
                    v.get("Title") or v.get("Description"),
                )
            )
    return findings


def _grype(report: dict) -> list[dict[str, Any]]:
    where = "grype report"
    _need("matches" in report, where, f"missing matches{_hint(report)}")
    findings = []
    for i, m in enumerate(_list(report, "matches", where)):
        at = f"{where}: matches[{i}]"
        _need(isinstance(m, dict), at, "expected an object")
        vuln, art = m.get("vulnerability"), m.get("artifact")
        _need(isinstance(vuln, dict) and vuln.get("id"), at, "missing vulnerability.id")
        _need(isinstance(art, dict) and art.get("name"), at, "missing artifact.name")
        fix = vuln.get("fix") or {}
        # Grype lists every fixed version across release lines; its suggestion is the one for this install
        suggested = [
            d.get("fix", {}).get("suggestedVersion")
            for d in m.get("matchDetails") or []
            if isinstance(d, dict) and isinstance(d.get("fix"), dict)
        ]
        fixed = next((s for s in suggested if s), None) or ", ".join(fix.get("versions") or []) or None
        findings.append(
            _finding(
                vuln["id"],
                art["name"],
                art.get("version"),
                fixed,
                _severity(vuln.get("severity")),
                vuln.get("description"),
            )
        )
    return findings


_SARIF_FIELD = re.compile(r"^(Package|Installed Version|Fixed Version):[ \t]*(.*?)[ \t]*$", re.M)
_LEVELS = {"error": "HIGH", "warning": "MEDIUM", "note": "LOW"}


def _sarif(report: dict) -> list[dict[str, Any]]:
    where = "sarif report"
    _need(
        str(report.get("version", "")).startswith("2.1"),
        where,
        f"version {report.get('version')!r} is not SARIF 2.1.0{_hint(report)}",
    )
    findings = []
    for r, run in enumerate(_list(report, "runs", where, required=True)):
        _need(isinstance(run, dict), f"{where}: runs[{r}]", "expected an object")
        rules = ((run.get("tool") or {}).get("driver") or {}).get("rules") or []
        by_id = {rule.get("id"): rule for rule in rules if isinstance(rule, dict)}
        for i, res in enumerate(_list(run, "results", f"{where}: runs[{r}]")):
            at = f"{where}: runs[{r}].results[{i}]"
            _need(isinstance(res, dict), at, "expected an object")
            rule_id = res.get("ruleId") or (res.get("rule") or {}).get("id")
            if not isinstance(rule_id, str) or not rule_id:
                raise ReportError(f"{at}: missing ruleId")
            index = res.get("ruleIndex")
            rule = rules[index] if isinstance(index, int) and 0 <= index < len(rules) else by_id.get(rule_id, {})
            props = rule.get("properties") or {}
            tags = [str(t).upper() for t in props.get("tags") or []]
            level = res.get("level") or (rule.get("defaultConfiguration") or {}).get("level")
            severity = (
                _cvss_severity(props.get("security-severity"))
                or next((t for t in tags if t in SEVERITIES), None)
                or _LEVELS.get(str(level), "UNKNOWN")
            )
            # Trivy writes package, installed and fixed versions into the result message;
            # its rule help names only one of the packages that share the CVE
            fields = dict(_SARIF_FIELD.findall((res.get("message") or {}).get("text") or ""))
            help_fields = dict(_SARIF_FIELD.findall((rule.get("help") or {}).get("text") or ""))
            locations = res.get("locations") or [{}]
            uri = ((locations[0].get("physicalLocation") or {}).get("artifactLocation") or {}).get("uri", "")
            package = fields.get("Package") or help_fields.get("Package") or uri
            title = (rule.get("shortDescription") or {}).get("text")
            if not title or title == rule_id:  # Trivy's short description is only the CVE id
                title = (rule.get("fullDescription") or {}).get("text") or title
            findings.append(
                _finding(
                    rule_id,
                    package,
                    fields.get("Installed Version"),
                    fields.get("Fixed Version") or help_fields.get("Fixed Version"),
                    severity,
                    title,
                )
            )
    return findings


def _purl_name_version(ref: str) -> tuple[str, str]:
    """Name and version from a bom-ref that is a purl (or a BOM-link ending in one)."""
    ref = ref.split("#", 1)[-1]
    if not ref.startswith("pkg:"):
        return ref, ""
    path = ref.split("?", 1)[0].split("#", 1)[0]
    path, _, version = path.partition("@")
    return unquote(path.rsplit("/", 1)[-1]), unquote(version)


_RECOMMEND = re.compile(r"^Upgrade \S+ to version (\S+)$")


def _cyclonedx_vulns(report: dict) -> list[dict[str, Any]]:
    where = "cyclonedx report"
    _need(report.get("bomFormat") == "CycloneDX", where, f"bomFormat is not CycloneDX{_hint(report)}")
    refs = {
        c.get("bom-ref"): (c.get("name", ""), c.get("version", ""))
        for _, c in _walk_components(report)
        if isinstance(c, dict) and c.get("bom-ref")
    }
    findings = []
    for i, v in enumerate(_list(report, "vulnerabilities", where)):
        at = f"{where}: vulnerabilities[{i}]"
        _need(isinstance(v, dict) and isinstance(v.get("id"), str) and v["id"], at, "missing id")
        ranks = [
            _severity(r.get("severity")) if r.get("severity") else (_cvss_severity(r.get("score")) or "UNKNOWN")
            for r in v.get("ratings") or []
            if isinstance(r, dict)
        ]
        known = [s for s in ranks if s != "UNKNOWN"]
        severity = min(known, key=SEVERITIES.index) if known else "UNKNOWN"
        fix = _RECOMMEND.match(str(v.get("recommendation") or "").strip())
        title = v.get("description") or v.get("detail") or ""
        affects = [a for a in v.get("affects") or [] if isinstance(a, dict) and a.get("ref")] or [{"ref": ""}]
        for a in affects:  # one finding per affected component, as the other scanners report
            ref = str(a["ref"])
            name, version = refs.get(ref) or refs.get(ref.split("#", 1)[-1]) or _purl_name_version(ref)
            affected = [
                x.get("version")
                for x in a.get("versions") or []
                if isinstance(x, dict) and x.get("status", "affected") == "affected" and x.get("version")
            ]
            findings.append(
                _finding(
                    v["id"], name, affected[0] if affected else version, fix.group(1) if fix else None, severity, title
                )
            )
    return findings


_SCANNERS: dict[str, Callable[[dict], list[dict[str, Any]]]] = {
    "trivy": _trivy,
    "grype": _grype,
    "sarif": _sarif,
    "cyclonedx": _cyclonedx_vulns,
}


def parse_scan(scanner: str, report: dict) -> list[dict[str, Any]]:
    """Normalise a trivy, grype, sarif or cyclonedx (VEX) report into findings.

    Raises ReportError naming the first thing that makes ``report`` not a
    report of that format.
    """
    parse = _SCANNERS.get(str(scanner).lower())
    if parse is None:
        raise ReportError(f"unknown scanner {scanner!r} (expected one of {', '.join(_SCANNERS)})")
    if not isinstance(report, dict):
        raise ReportError(f"{scanner} report: expected a JSON object, got {type(report).__name__}")
    return parse(report)


# --- SBOMs --------------------------------------------------------------------


def _walk_components(node: dict, path: str = "") -> list[tuple[str, Any]]:
    """(path, item) for every component and service of a CycloneDX BOM, nested ones included.

    ``metadata.component`` is left out: it is the subject of the BOM, not one of its parts.
    """
    out = []
    for key in ("components", "services"):
        items = node.get(key)
        for i, item in enumerate(items if isinstance(items, list) else []):
            out.append((f"{path}{key}[{i}]", item))
            if isinstance(item, dict):
                out.extend(_walk_components(item, f"{path}{key}[{i}]."))
    return out


def _component(name: str, version: Any, licenses: list[str]) -> dict[str, Any]:
    licenses = [lic.strip() for lic in licenses if lic and lic.strip().upper() not in _NO_LICENSE]
    return {
        "name": name,
        "version": str(version) if version else None,
        "licenses": licenses,
        "unknown_license": not licenses,
    }


def _cyclonedx_sbom(sbom: dict) -> list[dict[str, Any]]:
    where = "cyclonedx sbom"
    _need(sbom.get("bomFormat") == "CycloneDX", where, "bomFormat is not CycloneDX")
    for key in ("components", "services"):
        _list(sbom, key, where)
    components = []
    for path, c in _walk_components(sbom):
        _need(isinstance(c, dict) and isinstance(c.get("name"), str), f"{where}: {path}", "missing name")
        licenses = []
        for entry in c.get("licenses") or []:
            if not isinstance(entry, dict):
                continue
            lic = entry.get("license") or {}
            licenses.append(entry.get("expression") or lic.get("id") or lic.get("name") or "")
        components.append(_component(c["name"], c.get("version"), licenses))
    return components


def _spdx_sbom(sbom: dict) -> list[dict[str, Any]]:
    where = "spdx sbom"
    _need(
        str(sbom.get("spdxVersion", "")).startswith("SPDX-2."),
        where,
        f"spdxVersion {sbom.get('spdxVersion')!r} is not SPDX 2.x JSON",
    )
    components = []
    for i, p in enumerate(_list(sbom, "packages", where)):
        _need(isinstance(p, dict) and isinstance(p.get("name"), str), f"{where}: packages[{i}]", "missing name")
        concluded = str(p.get("licenseConcluded") or "")
        # a conclusion of NOASSERTION/NONE says nothing, so the declared license stands
        chosen = concluded if concluded.strip().upper() not in _NO_LICENSE else str(p.get("licenseDeclared") or "")
        components.append(_component(p["name"], p.get("versionInfo"), [chosen]))
    return components


def parse_sbom(fmt: str, sbom: dict) -> list[dict[str, Any]]:
    """Normalise a CycloneDX JSON or SPDX 2.x JSON SBOM into components.

    Raises ReportError when ``sbom`` is not an SBOM of that format.
    """
    parse = {"cyclonedx": _cyclonedx_sbom, "spdx": _spdx_sbom}.get(str(fmt).lower())
    if parse is None:
        raise ReportError(f"unknown SBOM format {fmt!r} (expected cyclonedx or spdx)")
    if not isinstance(sbom, dict):
        raise ReportError(f"{fmt} sbom: expected a JSON object, got {type(sbom).__name__}")
    return parse(sbom)
