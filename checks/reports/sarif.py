"""SARIF 2.1.0 from vulnerability scanners (Trivy, Grype and others), read as the scanner meant it.

Severity: the scanner's own rating wherever the SARIF carries it, then the CVSS score in
``security-severity``, then the result's ``level``:

- old Trivy ``contrib/sarif.tpl``: a ``[HIGH] CVE-…`` rule id (every level is ``error``);
- current Trivy: the rule's ``properties.tags`` (``["vulnerability", "security", "HIGH"]``);
- Grype and Trivy: ``Severity: critical`` in the rule's help text; Grype also in its short
  description (``CVE-… critical vulnerability for …``) and the result message.

Ids: a rule id such as ``CVE-1999-0002-package-2`` or ``[HIGH] CVE-2017-1000228`` becomes the
CVE or GHSA id it names, so exceptions match; the rule id stays in ``rule``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from checks.reports.common import (
    ReportError,
    cvss_severity,
    describe,
    finding,
    list_of,
    need,
    severity,
)

WHERE = "sarif report"
_ADVISORY = re.compile(r"(?<![A-Za-z0-9])(?:(CVE-\d{4}-\d{4,})|(GHSA(?:-[0-9a-z]{4}){3}))(?![0-9a-z])", re.I)
_PREFIX = re.compile(r"^\s*\[([A-Za-z]+)\]\s*")
_HELP_SEVERITY = re.compile(r"^Severity:[ \t]*([A-Za-z]+)", re.M | re.I)
_TEXT_SEVERITY = re.compile(r"\b(critical|high|medium|low|negligible)\b vulnerability", re.I)
_FIELD = re.compile(r"^(Package|Installed Version|Version|Fixed Version|Fix Version):[ \t]*(.*?)[ \t]*$", re.M | re.I)
_GRYPE_MESSAGE = re.compile(r"package: (?P<package>[^,\s]+), version (?P<version>\S+?)[, ]", re.I)
_LEVELS = {"error": "HIGH", "warning": "MEDIUM", "note": "LOW"}


def _rated(word: Any) -> str | None:
    """A scanner's severity word, or None when it says nothing (UNKNOWN falls through to CVSS)."""
    s = severity(word)
    return s if s != "UNKNOWN" else None


def _text(obj: Any) -> str:
    return str((obj or {}).get("text") or "") if isinstance(obj, dict) else ""


def _severity(rule: dict, result: dict, rule_id: str) -> tuple[str, str]:
    """(severity, where it was read)."""
    props = rule.get("properties") or {}
    prefix = _PREFIX.match(rule_id)
    tags = [tag for tag in props.get("tags") or [] if isinstance(tag, str) and _rated(tag)]
    help_text, short, message = (
        _text(x) for x in (rule.get("help"), rule.get("shortDescription"), result.get("message"))
    )
    own = (
        ("the rule id", prefix[1] if prefix else None),
        ("the rule's properties", props.get("severity")),
        ("the rule's tags", tags[0] if tags else None),
        ("the rule's help", (m := _HELP_SEVERITY.search(help_text)) and m[1]),
        ("the rule's description", (m := _TEXT_SEVERITY.search(short)) and m[1]),
        ("the result message", (m := _TEXT_SEVERITY.search(message)) and m[1]),
    )
    for source, word in own:
        if rated := _rated(word):
            return rated, source
    for where in (result.get("properties") or {}, props):
        score = where.get("security-severity")
        if banded := cvss_severity(score):
            return banded, f"CVSS security-severity {score}"
    level = result.get("level") or (rule.get("defaultConfiguration") or {}).get("level")
    if str(level) in _LEVELS:
        return _LEVELS[str(level)], f"SARIF level {level}"
    return "UNKNOWN", "nothing in the SARIF"


def advisory_id(rule_id: str, package: str = "") -> str:
    """The CVE or GHSA id a rule id names; otherwise the rule id without a severity prefix or a
    ``-<package>`` suffix (Grype's rule ids are ``<vulnerability>-<package>``)."""
    m = _ADVISORY.search(rule_id)
    if m:
        return m[1].upper() if m[1] else "GHSA-" + m[2][5:].lower()
    bare = _PREFIX.sub("", rule_id).strip()
    if package and bare.endswith(f"-{package}") and len(bare) > len(package) + 1:
        bare = bare[: -len(package) - 1]
    return bare


def _purl(value: Any) -> tuple[str, str]:
    text = str(value or "")
    if not text.startswith("pkg:"):
        return "", ""
    path, _, version = text.split("?", 1)[0].split("#", 1)[0].partition("@")
    return unquote(path.rsplit("/", 1)[-1]), unquote(version)


def _fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in _FIELD.findall(text):
        key = {"version": "installed version", "fix version": "fixed version"}.get(key.lower(), key.lower())
        out.setdefault(key, value)
    return out


def _package(rule: dict, result: dict) -> tuple[str, str, str]:
    """(package, installed, fixed): Trivy writes them into each result's message (its rule help names
    only one of the packages sharing the CVE); Grype into the rule help, its purls and the message."""
    message, helped = _fields(_text(result.get("message"))), _fields(_text(rule.get("help")))
    purls = (rule.get("properties") or {}).get("purls") or []
    p_name, p_version = _purl(purls[0]) if isinstance(purls, list) and purls else ("", "")
    grype = _GRYPE_MESSAGE.search(_text(result.get("message")) + " ")
    locations = result.get("locations") or [{}]
    first = locations[0] if isinstance(locations[0], dict) else {}
    uri = str(((first.get("physicalLocation") or {}).get("artifactLocation") or {}).get("uri") or "")
    package = message.get("package") or helped.get("package") or p_name or (grype["package"] if grype else "") or uri
    installed = (
        message.get("installed version")
        or helped.get("installed version")
        or p_version
        or (grype["version"] if grype else "")
    )
    fixed = message.get("fixed version") or helped.get("fixed version") or ""
    return package, installed, fixed


def parse(report: dict) -> list[dict[str, Any]]:
    if not str(report.get("version", "")).startswith("2.1"):
        raise ReportError(f"{WHERE}: expected SARIF 2.1.0 (version 2.1.0 and runs), found {describe(report)}")
    findings = []
    for r, run in enumerate(list_of(report, "runs", WHERE, required=True)):
        need(isinstance(run, dict), f"{WHERE}: runs[{r}]", "expected an object")
        rules = [x for x in ((run.get("tool") or {}).get("driver") or {}).get("rules") or [] if isinstance(x, dict)]
        by_id = {rule.get("id"): rule for rule in rules}
        for i, res in enumerate(list_of(run, "results", f"{WHERE}: runs[{r}]")):
            at = f"{WHERE}: runs[{r}].results[{i}]"
            need(isinstance(res, dict), at, "expected an object")
            rule_id = res.get("ruleId") or (res.get("rule") or {}).get("id")
            if not isinstance(rule_id, str) or not rule_id:
                raise ReportError(f"{at}: missing ruleId")
            index = res.get("ruleIndex")
            rule = rules[index] if isinstance(index, int) and 0 <= index < len(rules) else by_id.get(rule_id, {})
            sev, rated_by = _severity(rule, res, rule_id)
            package, installed, fixed = _package(rule, res)
            vuln = advisory_id(rule_id, package)
            title = _text(rule.get("shortDescription"))
            # Trivy's and Grype's short descriptions restate the id; the full description is the title
            if not title or title.upper().startswith(vuln.upper()) or _PREFIX.match(rule_id):
                title = _text(rule.get("fullDescription")) or title
            f = finding(vuln, package, installed, fixed, sev, title)
            f.update(rule=rule_id, severity_from=rated_by)
            findings.append(f)
    return findings
