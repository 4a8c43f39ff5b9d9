"""Scanner reports and SBOMs (real fixtures) through the parsers and the vulnerability/license/SBOM gates."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import parse_config
from checks.base import GateContext, GateResult
from checks.licenses import GATE as LICENSES
from checks.reports import ReportError, parse_sbom, parse_scan
from checks.sbom_present import GATE as SBOM_PRESENT
from checks.vulnerabilities import GATE as VULNERABILITIES
from storage.records import ArtifactRecord, SbomRecord, ScanRecord

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SERVICE, TAG, DIGEST = "api-gateway", "3f9c2a1", "sha256:" + "ab" * 32
ALPINE = "trivy/trivy-alpine-3.9-high-critical.json"
CENTOS = "trivy/trivy-centos-7-low-medium.json"
SARIF = "trivy/trivy-alpine-3.10-sarif.json"
VEX = "trivy/trivy-centos-7-cyclonedx-vex.json"
GRYPE = "grype/grype-image-presenter-snapshot.json"
CDX_LICENSES = "sbom/cyclonedx-1.6-licenses-id-expression-name.json"
CDX_PEP639 = "sbom/cyclonedx-1.6-python-env-pep639-licenses.json"
SPDX = "sbom/spdx-2.3-hello-server-rust-deps.json"

BASE_CONFIG = """
environments:
  - name: dev
  - name: staging
    approval: automatic
  - name: production
    approval: manual
    approvers: [U0PLATFORMLEAD]
services:
  api-gateway:
    repository: acme/api-gateway
    image: registry.example.com/acme/api-gateway
    workflow: deploy.yml
    channel: C0DEPLOYS
"""


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class MemoryLedger:
    """Only what these gates read: the artifact, its latest scan and its latest SBOM."""

    def __init__(self, *, scan: ScanRecord | None = None, sbom: SbomRecord | None = None, digest: str = DIGEST):
        self.digest, self.scan, self.sbom = digest, scan, sbom

    def artifact(self, service: str, tag: str) -> ArtifactRecord | None:
        if (service, tag) != (SERVICE, TAG):
            return None
        return ArtifactRecord(service, tag, self.digest, "3f9c2a1" + "0" * 33, "run-1", NOW - timedelta(days=1))

    def latest_scan(self, service: str, tag: str, digest: str | None) -> ScanRecord | None:
        s = self.scan
        return s if s and (s.service, s.tag, s.digest) == (service, tag, digest) else None

    def latest_sbom(self, service: str, tag: str, digest: str | None) -> SbomRecord | None:
        s = self.sbom
        return s if s and (s.service, s.tag, s.digest) == (service, tag, digest) else None


def context(ledger: MemoryLedger, now: datetime = NOW, target: str = "production", **policy: Any) -> GateContext:
    text = BASE_CONFIG + (yaml.safe_dump({"policy": policy}) if policy else "")
    config = parse_config(text)
    return GateContext(
        service=SERVICE,
        tag=TAG,
        target_environment=target,
        source_environment=config.previous_environment(target),
        now=now,
        config=config,
        ledger=ledger,
    )


def scan_record(scanner: str, fixture: str, digest: str = DIGEST) -> ScanRecord:
    return ScanRecord(
        SERVICE, TAG, digest, scanner, NOW - timedelta(hours=1), tuple(parse_scan(scanner, load(fixture)))
    )


def sbom_record(components: list[dict[str, Any]], fmt: str = "cyclonedx") -> SbomRecord:
    return SbomRecord(SERVICE, TAG, DIGEST, fmt, NOW - timedelta(hours=1), tuple(components))


def sbom_of(fixture: str) -> SbomRecord:
    fmt = "spdx" if "spdx" in fixture else "cyclonedx"
    return sbom_record(parse_sbom(fmt, load(fixture)), fmt)


def component(name: str, *licenses: str) -> dict[str, Any]:
    return {"name": name, "version": "1.0", "licenses": list(licenses), "unknown_license": not licenses}


async def judge(gate, ctx: GateContext) -> GateResult:
    result = await gate.evaluate(ctx)
    json.dumps(result.to_json())  # evidence must survive the audit log and the API
    return result


# --- parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "scanner, fixture, counts",
    [
        ("trivy", ALPINE, {"CRITICAL": 2}),
        ("trivy", CENTOS, {"MEDIUM": 1, "LOW": 2}),
        ("sarif", SARIF, {"MEDIUM": 6, "LOW": 2}),
        ("grype", GRYPE, {"CRITICAL": 1, "LOW": 1}),
        # highest rating wins: nvd says HIGH for bash's CVE-2019-18276 where Red Hat says LOW
        ("cyclonedx", VEX, {"HIGH": 1, "MEDIUM": 2}),
    ],
)
def test_scan_severity_counts(scanner, fixture, counts):
    findings = parse_scan(scanner, load(fixture))
    assert Counter(f["severity"] for f in findings) == counts
    for f in findings:
        assert set(f) >= {"id", "package", "installed", "fixed", "severity", "title"}
        assert set(f) - {"id", "package", "installed", "fixed", "severity", "title"} <= {"rule", "severity_from", "vex"}
        assert f["id"] and f["package"]


def test_trivy_findings_carry_packages_and_versions():
    alpine = parse_scan("trivy", load(ALPINE))
    assert [(f["id"], f["package"], f["installed"], f["fixed"]) for f in alpine] == [
        ("CVE-2019-14697", "musl", "1.1.20-r4", "1.1.20-r5"),
        ("CVE-2019-14697", "musl-utils", "1.1.20-r4", "1.1.20-r5"),
    ]
    bash = next(f for f in parse_scan("trivy", load(CENTOS)) if f["package"] == "bash")
    assert bash["fixed"] is None and bash["severity"] == "LOW"  # Status will_not_fix


def test_sarif_rules_and_result_packages():
    findings = parse_scan("sarif", load(SARIF))
    by_rule = {f["id"]: f["severity"] for f in findings}
    assert sorted(by_rule.values()) == ["LOW", "MEDIUM", "MEDIUM", "MEDIUM"]
    # the package comes from each result, not from the rule's help text (which names only libssl1.1)
    assert Counter(f["package"] for f in findings) == {"libcrypto1.1": 4, "libssl1.1": 4}
    f = next(f for f in findings if f["id"] == "CVE-2019-1551")
    assert (f["installed"], f["fixed"]) == ("1.1.1c-r0", "1.1.1d-r2")


@pytest.mark.parametrize(
    "props, level, expected",
    [
        # the scanner's own rating (here Trivy-style tags) comes before the CVSS score
        ({"security-severity": "9.8", "tags": ["LOW"]}, "note", "LOW"),
        ({"security-severity": "9.8", "tags": ["vulnerability", "security"]}, "note", "CRITICAL"),
        ({"security-severity": "7.0"}, "warning", "HIGH"),
        ({"security-severity": "4.0"}, "error", "MEDIUM"),
        ({"security-severity": "0.1"}, "error", "LOW"),
        ({"tags": ["security", "high"]}, "note", "HIGH"),
        ({}, "error", "HIGH"),
        ({}, "warning", "MEDIUM"),
        ({}, "note", "LOW"),
        ({}, None, "UNKNOWN"),
    ],
)
def test_sarif_severity_scanner_rating_then_cvss_then_level(props, level, expected):
    result = {"ruleId": "R1", "message": {"text": "Package: p\nInstalled Version: 1\nFixed Version: "}}
    if level:
        result["level"] = level
    report = {
        "version": "2.1.0",
        "runs": [
            {"tool": {"driver": {"name": "x", "rules": [{"id": "R1", "properties": props}]}}, "results": [result]}
        ],
    }
    [finding] = parse_scan("sarif", report)
    assert finding["severity"] == expected and finding["package"] == "p" and finding["fixed"] is None


def test_grype_and_cyclonedx_vex_findings():
    grype = {f["id"]: f for f in parse_scan("grype", load(GRYPE))}
    assert grype["CVE-1999-0002"]["package"] == "package-2" and grype["CVE-1999-0002"]["fixed"] is None
    assert grype["CVE-1999-0001"]["fixed"] == "1.2.1"  # Grype's suggested fix for the installed 1.1.1
    vex = {f["id"]: f for f in parse_scan("cyclonedx", load(VEX))}
    assert set(vex) == {"CVE-2019-18276", "CVE-2019-1559", "CVE-2018-0734"}
    assert (vex["CVE-2019-1559"]["package"], vex["CVE-2019-1559"]["installed"], vex["CVE-2019-1559"]["fixed"]) == (
        "openssl-libs",
        "1:1.0.2k-16.el7",
        "1:1.0.2k-19.el7",
    )


@pytest.mark.parametrize(
    "scanner, report, message",
    [
        (
            "trivy",
            {"SchemaVersion": 2, "Results": [{}, {}, {"Vulnerabilities": [{"PkgName": "musl"}]}]},
            "trivy report: Results[2].Vulnerabilities[0]: missing VulnerabilityID",
        ),
        (
            "trivy",
            load(GRYPE),
            "trivy report: expected Trivy JSON (SchemaVersion and Results), found a Grype JSON report (matches)",
        ),
        ("trivy", {"SchemaVersion": 1, "Results": []}, "SchemaVersion 1 is not supported"),
        ("grype", load(ALPINE), "grype report: expected Grype JSON (matches), found a Trivy JSON report"),
        (
            "grype",
            {"matches": [{"vulnerability": {"id": "CVE-1"}, "artifact": {}}]},
            "grype report: matches[0]: missing artifact.name",
        ),
        ("sarif", load(CENTOS), "sarif report: expected SARIF 2.1.0 (version 2.1.0 and runs), found a Trivy JSON"),
        (
            "sarif",
            {"version": "2.1.0", "runs": [{"results": [{"message": {"text": "x"}}]}]},
            "sarif report: runs[0].results[0]: missing ruleId",
        ),
        ("cyclonedx", load(SPDX), "cyclonedx report: expected CycloneDX JSON (bomFormat CycloneDX), found an SPDX"),
        ("nessus", {}, "unknown scanner 'nessus'"),
        ("trivy", [], "trivy report: expected a JSON object"),
    ],
)
def test_scan_report_errors_name_the_problem(scanner, report, message):
    with pytest.raises(ReportError) as err:
        parse_scan(scanner, report)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "fmt, fixture, expected",
    [
        (
            "cyclonedx",
            CDX_LICENSES,
            {
                "c-with-SPDX": ["Apache-2.0"],
                "c-with-expression": ["Apache-2.0 OR MIT"],
                "c-with-name": ["some additional", "some commercial license"],
                "s-with-SPDX": ["Apache-2.0"],
                "s-with-expression": ["Apache-2.0 OR MIT"],
                "s-with-name": ["some additional", "some commercial license"],
            },
        ),
        (
            "cyclonedx",
            CDX_PEP639,
            {
                "attrs": ["MIT"],
                "boolean.py": ["BSD-2-Clause"],
                "cryptography": ["Apache-2.0 OR BSD-3-Clause"],
                "jsonpointer": ["License :: OSI Approved :: BSD License"],
                "license-expression": ["Apache-2.0"],
                "lxml": ["BSD-3-Clause", "License :: OSI Approved :: BSD License"],
                "regression-issue868": [],
            },
        ),
        # licenseConcluded wins over a NOASSERTION licenseDeclared
        (
            "spdx",
            SPDX,
            {
                "hello-server-src": ["Apache-2.0"],
                "hyper": ["MIT"],
                "tokio": ["MIT"],
                "pretty_env_logger": ["MIT OR Apache-2.0"],
            },
        ),
    ],
)
def test_sbom_components_and_licenses(fmt, fixture, expected):
    components = parse_sbom(fmt, load(fixture))
    assert {c["name"]: c["licenses"] for c in components} == expected
    assert {c["name"] for c in components if c["unknown_license"]} == {n for n, lic in expected.items() if not lic}


def test_sbom_nesting_and_spdx_noassertion():
    bom = {
        "bomFormat": "CycloneDX",
        "components": [
            {
                "name": "outer",
                "version": "1",
                "components": [{"name": "inner", "licenses": [{"license": {"id": "MIT"}}]}],
            }
        ],
    }
    assert [(c["name"], c["licenses"]) for c in parse_sbom("cyclonedx", bom)] == [("outer", []), ("inner", ["MIT"])]
    spdx = {
        "spdxVersion": "SPDX-2.3",
        "packages": [
            {"name": "a", "licenseConcluded": "NOASSERTION", "licenseDeclared": "BSD-3-Clause"},
            {"name": "b", "licenseConcluded": "NONE", "licenseDeclared": "NOASSERTION"},
            {"name": "c"},
        ],
    }
    parsed = {c["name"]: (c["licenses"], c["unknown_license"]) for c in parse_sbom("spdx", spdx)}
    assert parsed == {"a": (["BSD-3-Clause"], False), "b": ([], True), "c": ([], True)}


@pytest.mark.parametrize(
    "fmt, sbom, message",
    [
        (
            "spdx",
            load(CDX_PEP639),
            "spdx sbom: expected SPDX 2.x JSON (spdxVersion SPDX-2.x), found a CycloneDX 1.6 document with 7 components",
        ),
        ("cyclonedx", load(ALPINE), "cyclonedx sbom: expected CycloneDX JSON (bomFormat CycloneDX), found a Trivy"),
        (
            "cyclonedx",
            {"bomFormat": "CycloneDX", "components": [{"name": "a", "components": [{"version": "1"}]}]},
            "cyclonedx sbom: components[0].components[0]: missing name",
        ),
        (
            "spdx",
            {"spdxVersion": "SPDX-2.3", "packages": [{"versionInfo": "1"}]},
            "spdx sbom: packages[0]: missing name",
        ),
        ("swid", {}, "unknown SBOM format 'swid'"),
    ],
)
def test_sbom_errors_name_the_problem(fmt, sbom, message):
    with pytest.raises(ReportError) as err:
        parse_sbom(fmt, sbom)
    assert message in str(err.value)


# --- vulnerabilities gate ---------------------------------------------------------------

EXCEPTION = {"id": "CVE-2019-14697", "reason": "not reachable"}


@pytest.mark.parametrize(
    "scanner, fixture, policy, status, says",
    [
        (
            "trivy",
            ALPINE,
            {},
            "failed",
            ["2 CRITICAL vulnerabilities", "CVE-2019-14697", "musl 1.1.20-r4", "musl-utils", "1.1.20-r5"],
        ),
        (
            "trivy",
            ALPINE,
            {"vulnerability_exceptions": [{**EXCEPTION, "until": "2027-01-31"}]},
            "passed",
            ["CVE-2019-14697 until 2027-01-31"],
        ),
        ("trivy", ALPINE, {"vulnerability_exceptions": [{**EXCEPTION, "until": "2025-06-01"}]}, "passed", []),
        (
            "trivy",
            ALPINE,
            {"vulnerability_exceptions": [{**EXCEPTION, "until": "2024-01-31"}]},
            "failed",
            ["CVE-2019-14697", "expired on 2024-01-31"],
        ),
        (
            "trivy",
            ALPINE,
            {"vulnerability_exceptions": [{**EXCEPTION, "until": "2027-01-31", "services": ["billing"]}]},
            "failed",
            ["CVE-2019-14697"],
        ),
        (
            "trivy",
            ALPINE,
            {"vulnerability_exceptions": [{**EXCEPTION, "until": "2027-01-31", "services": [SERVICE]}]},
            "passed",
            [],
        ),
        ("trivy", CENTOS, {"block_severities": ["CRITICAL"]}, "passed", ["1 MEDIUM, 2 LOW"]),
        (
            "trivy",
            CENTOS,
            {"block_severities": ["CRITICAL", "MEDIUM"]},
            "failed",
            ["CVE-2019-1559 in openssl-libs 1:1.0.2k-16.el7", "fixed in 1:1.0.2k-19.el7"],
        ),
        ("sarif", SARIF, {}, "passed", ["6 MEDIUM, 2 LOW"]),
        (
            "sarif",
            SARIF,
            {"block_severities": ["CRITICAL", "MEDIUM"]},
            "failed",
            ["6 MEDIUM vulnerabilities", "and 1 more"],
        ),
        ("grype", GRYPE, {}, "failed", ["CVE-1999-0002 in package-2 2.2.2 (no fix yet)"]),
        ("cyclonedx", VEX, {"block_severities": ["CRITICAL", "HIGH"]}, "failed", ["CVE-2019-18276 in bash"]),
    ],
)
async def test_vulnerabilities_gate(scanner, fixture, policy, status, says):
    result = await judge(VULNERABILITIES, context(MemoryLedger(scan=scan_record(scanner, fixture)), **policy))
    assert result.status.value == status, result.reason
    for text in says:
        assert text in result.reason
    assert sum(result.evidence["counts"].values()) == len(parse_scan(scanner, load(fixture)))
    if status == "failed":
        assert result.next_step


async def test_vulnerabilities_evidence_has_full_list_and_applied_exceptions():
    ledger = MemoryLedger(scan=scan_record("sarif", SARIF))
    failed = await judge(VULNERABILITIES, context(ledger, block_severities=["CRITICAL", "MEDIUM", "LOW"]))
    assert len(failed.evidence["blocking"]) == 8 and "and 3 more" in failed.reason
    assert failed.evidence["blocking_counts"]["MEDIUM"] == 6 and failed.evidence["blocking_counts"]["LOW"] == 2

    ledger = MemoryLedger(scan=scan_record("trivy", ALPINE))
    exceptions = [{**EXCEPTION, "until": "2027-01-31"}]
    passed = await judge(VULNERABILITIES, context(ledger, vulnerability_exceptions=exceptions))
    assert passed.evidence["counts"]["CRITICAL"] == 2
    assert passed.evidence["exceptions_applied"] == [
        {"id": "CVE-2019-14697", "until": "2027-01-31", "reason": "not reachable", "findings": 2}
    ]


async def test_exception_dates_are_compared_in_utc():
    # 00:30 in Berlin on 1 June is still 31 May in UTC: an exception until 31 May holds
    berlin_morning = datetime(2025, 6, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    ctx = context(
        MemoryLedger(scan=scan_record("trivy", ALPINE)),
        now=berlin_morning,
        vulnerability_exceptions=[{**EXCEPTION, "until": "2025-05-31"}],
    )
    assert (await judge(VULNERABILITIES, ctx)).status.value == "passed"


@pytest.mark.parametrize(
    "ledger, policy, status, says",
    [
        (MemoryLedger(), {}, "failed", f"no vulnerability scan recorded for digest `{DIGEST}`"),
        # where a person approves a scan is always required: require_scan: false does not reach production
        (MemoryLedger(), {"require_scan": False}, "failed", f"no vulnerability scan recorded for digest `{DIGEST}`"),
        # a scan of another image does not count for this one
        (
            MemoryLedger(scan=scan_record("trivy", CENTOS, digest="sha256:" + "cd" * 32)),
            {},
            "failed",
            "no vulnerability scan recorded",
        ),
        (MemoryLedger(), {"require_scan": False, "target": "staging"}, "passed", "none is required"),
    ],
)
async def test_vulnerabilities_without_a_scan(ledger, policy, status, says):
    result = await judge(VULNERABILITIES, context(ledger, **policy))
    assert result.status.value == status and says in result.reason
    if status == "failed":
        assert "scan.finished" in result.next_step


# --- licenses and SBOM gates ---------------------------------------------------------------

DEFAULT_PROHIBITED = ["AGPL-3.0-only", "AGPL-3.0-or-later", "SSPL-1.0"]


@pytest.mark.parametrize(
    "sbom, prohibited, status, blamed",
    [
        (sbom_of(CDX_LICENSES), DEFAULT_PROHIBITED, "passed", {}),
        # the OR components can choose MIT; only the bare Apache-2.0 ones are refused
        (
            sbom_of(CDX_LICENSES),
            ["Apache-2.0"],
            "failed",
            {"c-with-SPDX": ["Apache-2.0"], "s-with-SPDX": ["Apache-2.0"]},
        ),
        (sbom_of(CDX_PEP639), DEFAULT_PROHIBITED, "passed", {}),
        (sbom_of(CDX_PEP639), ["Apache-2.0"], "failed", {"license-expression 30.3.0": ["Apache-2.0"]}),
        (sbom_of(CDX_PEP639), ["BSD-3-Clause"], "failed", {"lxml 5.3.0": ["BSD-3-Clause"]}),
        (sbom_of(SPDX), DEFAULT_PROHIBITED, "passed", {}),
        (sbom_of(SPDX), ["MIT"], "failed", {"hyper 0.14": ["MIT"], "tokio 1.19.2": ["MIT"]}),
        (
            sbom_of(SPDX),
            ["MIT", "Apache-2.0"],
            "failed",
            {
                "hello-server-src 0.1.0": ["Apache-2.0"],
                "hyper 0.14": ["MIT"],
                "tokio 1.19.2": ["MIT"],
                "pretty_env_logger 0.4.0": ["Apache-2.0", "MIT"],
            },
        ),
        (sbom_record([component("x", "MIT OR AGPL-3.0-only")]), DEFAULT_PROHIBITED, "passed", {}),
        (
            sbom_record([component("x", "MIT AND AGPL-3.0-only")]),
            DEFAULT_PROHIBITED,
            "failed",
            {"x 1.0": ["AGPL-3.0-only"]},
        ),
        (sbom_record([component("x", "(MIT OR AGPL-3.0-only) AND GPL-2.0-only")]), DEFAULT_PROHIBITED, "passed", {}),
        (
            sbom_record([component("x", "(MIT OR AGPL-3.0-only) AND GPL-2.0-only")]),
            ["AGPL-3.0-only", "GPL-2.0-only"],
            "failed",
            {"x 1.0": ["GPL-2.0-only"]},
        ),
        # ids are normalised by the SPDX licensing: deprecated AGPL-3.0 is AGPL-3.0-only, case does not matter
        (sbom_record([component("x", "agpl-3.0")]), DEFAULT_PROHIBITED, "failed", {"x 1.0": ["AGPL-3.0-only"]}),
        (
            sbom_record([component("x", "GPL-2.0-only WITH Classpath-exception-2.0")]),
            ["GPL-2.0-only"],
            "failed",
            {"x 1.0": ["GPL-2.0-only"]},
        ),
        # two entries on one component apply together
        (
            sbom_record([component("x", "MIT", "AGPL-3.0-or-later")]),
            DEFAULT_PROHIBITED,
            "failed",
            {"x 1.0": ["AGPL-3.0-or-later"]},
        ),
        (sbom_record([component("x", "MIT AND (")]), DEFAULT_PROHIBITED, "passed", {}),
    ],
)
async def test_licenses_gate(sbom, prohibited, status, blamed):
    result = await judge(LICENSES, context(MemoryLedger(sbom=sbom), prohibited_licenses=prohibited))
    assert result.status.value == status, result.reason
    assert {v["component"]: v["prohibited"] for v in result.evidence["violations"]} == blamed
    for name, ids in blamed.items():
        assert name in result.reason and all(i in result.reason for i in ids)


async def test_licenses_unknown_and_unlicensed_are_reported_not_refused():
    ctx = context(MemoryLedger(sbom=sbom_of(CDX_PEP639)), prohibited_licenses=DEFAULT_PROHIBITED)
    result = await judge(LICENSES, ctx)
    assert result.status.value == "passed"
    assert {u["component"] for u in result.evidence["unknown"]} == {"jsonpointer 2.4", "lxml 5.3.0"}
    assert result.evidence["without_license"] == ["regression-issue868 0.1"]
    assert (
        "1 license cannot be identified (policy.unknown_licenses: warn): "
        "`License :: OSI Approved :: BSD License` in jsonpointer 2.4, lxml 5.3.0"
    ) in result.reason
    assert "1 component has no license information" in result.reason

    named = await judge(LICENSES, context(MemoryLedger(sbom=sbom_of(CDX_LICENSES))))
    assert {u["expression"] for u in named.evidence["unknown"]} == {"some additional", "some commercial license"}
    broken = await judge(LICENSES, context(MemoryLedger(sbom=sbom_record([component("x", "MIT AND (")]))))
    assert broken.evidence["unknown"][0]["problem"].startswith("does not parse")


async def test_licenses_refusal_is_capped():
    sbom = sbom_record([component(f"lib{i}", "AGPL-3.0-only") for i in range(7)])
    result = await judge(LICENSES, context(MemoryLedger(sbom=sbom), prohibited_licenses=DEFAULT_PROHIBITED))
    assert "7 components need a prohibited license" in result.reason and "and 2 more" in result.reason
    assert "lib4" in result.reason and "lib5" not in result.reason
    assert len(result.evidence["violations"]) == 7


@pytest.mark.parametrize(
    "gate, require_sbom, target, status, says",
    [
        (LICENSES, True, "production", "failed", f"no SBOM recorded for digest `{DIGEST}`"),
        (LICENSES, False, "staging", "passed", "no SBOM to check licenses against"),
        (SBOM_PRESENT, True, "production", "failed", f"no SBOM recorded for digest `{DIGEST}`"),
        (SBOM_PRESENT, False, "staging", "passed", "none is required"),
        # the SBOM gate cannot be configured away where a person approves
        (SBOM_PRESENT, False, "production", "failed", f"no SBOM recorded for digest `{DIGEST}`"),
    ],
)
async def test_no_sbom(gate, require_sbom, target, status, says):
    result = await judge(gate, context(MemoryLedger(), target=target, require_sbom=require_sbom))
    assert result.status.value == status and says in result.reason
    if status == "failed":
        assert "sbom.published" in result.next_step


async def test_sbom_present_counts_components():
    result = await judge(SBOM_PRESENT, context(MemoryLedger(sbom=sbom_of(CDX_PEP639))))
    assert result.status.value == "passed" and "7 components" in result.reason
    assert result.evidence["components"] == 7 and result.evidence["format"] == "cyclonedx"
