"""Reports read as their authors meant them (issue 12, points 1–3): CycloneDX VEX states, SARIF
severities and ids from Grype and Trivy, and license names, custom licenses and OR choices.

Every input is a public sample in tests/fixtures (see SOURCES.md); the gates are judged with the
same in-memory ledger as tests/test_reports_and_gates.py.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bot.config import ConfigError, parse_config
from checks.license_terms import by_name, resolve
from checks.licenses import GATE as LICENSES
from checks.reports import ReportError, parse_scan
from checks.reports.sarif import advisory_id
from checks.vulnerabilities import GATE as VULNERABILITIES
from tests.test_reports_and_gates import (
    BASE_CONFIG,
    CDX_LICENSES,
    MemoryLedger,
    component,
    context,
    judge,
    load,
    sbom_of,
    sbom_record,
    scan_record,
)

NOT_AFFECTED = "vex/cdx-vex-cisa-case1-not_affected.json"
RESOLVED = "vex/cdx-vex-cisa-case1-fixed.json"
FALSE_POSITIVE = "vex/cdx-vex-cisa-case1-false_positive.EDITED.json"
IN_TRIAGE = "vex/cdx-vex-cisa-case1-under_investigation.json"
EXPLOITABLE = "vex/cdx-vex-cisa-case1-affected.json"
USE_CASE_12 = "vex/cdx-vex-use-case-12.json"
GRYPE_SARIF = "sarif/grype-sarif-image-snapshot.json"
TRIVY_SARIF = "sarif/trivy-alpine-3.10-sarif-current.json"
TRIVY_TEMPLATE_SARIF = "sarif/trivy-alpine-3.10-sarif-contrib-template.json"
TRIVY_SPDX = "sbom/trivy-spdx-2.2-centos-7.json"
SPDX_EXAMPLE = "sbom/spdx-2.3-spec-example.json"


# --- 1. CycloneDX VEX -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture, state, why",
    [
        (NOT_AFFECTED, "not_affected", "code_not_present"),
        (RESOLVED, "resolved", "This version of Product DEF has been fixed."),
        (FALSE_POSITIVE, "false_positive", "This version of Product ABC is not affected by the vulnerability."),
    ],
)
async def test_vex_states_that_waive_are_shown_as_waived_with_their_justification(fixture, state, why):
    [finding] = parse_scan("cyclonedx", load(fixture))
    assert finding["id"] == "CVE-2021-44228" and finding["severity"] == "CRITICAL"
    assert finding["vex"]["state"] == state
    result = await judge(VULNERABILITIES, context(MemoryLedger(scan=scan_record("cyclonedx", fixture))))
    assert result.status.value == "passed", result.reason
    assert result.reason.startswith("no CRITICAL vulnerability (cyclonedx: no findings); waived by the VEX: ")
    assert f"CVE-2021-44228 in {finding['package']} {finding['installed']} ({state}: {why}" in result.reason
    assert sum(result.evidence["counts"].values()) == 0
    [waived] = result.evidence["waived_by_vex"]
    assert (waived["id"], waived["state"], waived["severity"]) == ("CVE-2021-44228", state, "CRITICAL")


@pytest.mark.parametrize("fixture, state", [(IN_TRIAGE, "in_triage"), (EXPLOITABLE, "exploitable")])
async def test_vex_states_that_do_not_waive_are_findings(fixture, state):
    result = await judge(VULNERABILITIES, context(MemoryLedger(scan=scan_record("cyclonedx", fixture))))
    assert result.status.value == "failed"
    assert result.reason.startswith("1 CRITICAL vulnerability: CVE-2021-44228 in ")
    assert f"(no fix yet; VEX: {state})" in result.reason
    assert result.evidence["counts"]["CRITICAL"] == 1 and result.evidence["waived_by_vex"] == []


async def test_vex_with_mixed_states_and_a_missing_analysis():
    findings = {f["id"]: f for f in parse_scan("cyclonedx", load(USE_CASE_12))}
    assert {i: f["vex"]["state"] for i, f in findings.items()} == {
        "CVE-2020-25649": "not_affected",
        "CVE-2020-35491": "exploitable",
        "CVE-2020-14195": "not_affected",
    }
    # Use-Case 12 carries no ratings: the exploitable one is an UNKNOWN finding
    ctx = context(MemoryLedger(scan=scan_record("cyclonedx", USE_CASE_12)), block_severities=["CRITICAL", "UNKNOWN"])
    result = await judge(VULNERABILITIES, ctx)
    assert result.status.value == "failed"
    assert "1 UNKNOWN vulnerability: CVE-2020-35491 in Acme Product 2.2.0" in result.reason
    assert "CVE-2020-25649 in Acme Product 2.2.0 (not_affected: code_not_reachable)" in result.reason
    assert "CVE-2020-14195 in Acme Product 2.2.0 (not_affected: protected_by_mitigating_control)" in result.reason
    assert result.evidence["counts"]["UNKNOWN"] == 1 and len(result.evidence["waived_by_vex"]) == 2
    # Trivy's own CycloneDX has no analysis at all: every entry is a finding
    trivy = parse_scan("cyclonedx", load("trivy/trivy-centos-7-cyclonedx-vex.json"))
    assert len(trivy) == 3 and not any("vex" in f for f in trivy)


def test_a_cyclonedx_sbom_is_not_a_vulnerability_report():
    with pytest.raises(ReportError) as err:
        parse_scan("cyclonedx", load(CDX_LICENSES))
    assert str(err.value) == (
        "cyclonedx report: not a vulnerability report: expected a vulnerabilities section, found a CycloneDX 1.6 "
        "document with 3 components, 3 services; an SBOM goes in sbom.published"
    )
    empty = {**load(NOT_AFFECTED), "vulnerabilities": []}  # a VEX that lists nothing is a clean report
    assert parse_scan("cyclonedx", empty) == []


# --- 2. SARIF ----------------------------------------------------------------------------


def test_grype_sarif_takes_grypes_rating_over_the_cvss_number():
    findings = {f["id"]: f for f in parse_scan("sarif", load(GRYPE_SARIF))}
    critical = findings["CVE-1999-0002"]
    # security-severity says 1.0 (LOW); Grype rates it critical in the rule's help text
    assert (critical["severity"], critical["severity_from"]) == ("CRITICAL", "the rule's help")
    assert critical["rule"] == "CVE-1999-0002-package-2"
    assert (critical["package"], critical["installed"], critical["fixed"]) == ("package-2", "2.2.2", None)
    low = findings["CVE-1999-0001"]
    assert low["severity"] == "LOW" and low["rule"] == "CVE-1999-0001-package-1"  # 4.0 would be MEDIUM
    assert (low["package"], low["installed"], low["fixed"]) == ("package-1", "1.1.1", "the-next-version")


async def test_grype_sarif_blocks_critical_and_an_exception_for_the_cve_matches():
    ledger = MemoryLedger(scan=scan_record("sarif", GRYPE_SARIF))
    result = await judge(VULNERABILITIES, context(ledger))
    assert result.status.value == "failed"
    assert result.reason.startswith("1 CRITICAL vulnerability: CVE-1999-0002 in package-2 2.2.2 (no fix yet)")
    assert result.evidence["blocking"][0]["rule"] == "CVE-1999-0002-package-2"
    exception = {"id": "CVE-1999-0002", "until": "2027-01-31", "reason": "not shipped"}
    result = await judge(VULNERABILITIES, context(ledger, vulnerability_exceptions=[exception]))
    assert result.status.value == "passed" and "excepted: CVE-1999-0002 until 2027-01-31" in result.reason


@pytest.mark.parametrize(
    "fixture, counts, rated_by",
    [
        # the old contrib/sarif.tpl: every level is "error", the severity only in "[MEDIUM] CVE-…"
        (TRIVY_TEMPLATE_SARIF, {"MEDIUM": 4, "LOW": 1}, {"the rule id"}),
        (TRIVY_SARIF, {"MEDIUM": 4}, {"the rule's tags"}),
        ("trivy/trivy-alpine-3.10-sarif.json", {"MEDIUM": 6, "LOW": 2}, {"the rule's tags"}),
    ],
)
def test_trivy_sarif_old_and_current_templates(fixture, counts, rated_by):
    findings = parse_scan("sarif", load(fixture))
    assert Counter(f["severity"] for f in findings) == counts
    assert {f["severity_from"] for f in findings} == rated_by
    assert all(f["id"].startswith("CVE-2019-") or f["id"].startswith("CVE-2020-") for f in findings)
    assert all(f["package"] and f["installed"] == "1.1.1c-r0" for f in findings)


def test_old_trivy_sarif_ids_are_the_cves_and_keep_the_rule():
    findings = parse_scan("sarif", load(TRIVY_TEMPLATE_SARIF))
    first = findings[0]
    assert (first["id"], first["rule"], first["package"], first["fixed"]) == (
        "CVE-2019-1549",
        "[MEDIUM] CVE-2019-1549",
        "openssl",
        "1.1.1d-r0",
    )
    assert first["title"] == "openssl: information disclosure in fork()."


@pytest.mark.parametrize(
    "rule_id, package, expected",
    [
        ("[HIGH] CVE-2017-1000228", "", "CVE-2017-1000228"),
        ("CVE-1999-0002-package-2", "package-2", "CVE-1999-0002"),
        ("cve-2021-44228-log4j-core", "", "CVE-2021-44228"),
        ("GHSA-JFH8-C2JP-5V3Q-log4j-core", "log4j-core", "GHSA-jfh8-c2jp-5v3q"),
        ("ANCHOREVULN_CVE-1999-0001_deb_package-1_1.0", "", "CVE-1999-0001"),
        ("ALAS-2021-1234-openssl", "openssl", "ALAS-2021-1234"),
        ("[LOW] DLA-1234-1", "", "DLA-1234-1"),
    ],
)
def test_rule_ids_become_advisory_ids(rule_id, package, expected):
    assert advisory_id(rule_id, package) == expected


# --- 3. license names, custom licenses, OR branches ------------------------------------------


@pytest.mark.parametrize(
    "name, spdx",
    [
        ("GPLv3+", "GPL-3.0-or-later"),
        ("Apache License 2.0", "Apache-2.0"),
        ("MIT License", "MIT"),
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("LGPLv2+", "LGPL-2.0-or-later"),
        ("GPLv2", "GPL-2.0-only"),
        ("some commercial license", None),
        ("License :: OSI Approved :: BSD License", None),  # a family, not one license
    ],
)
def test_license_names_map_through_license_expressions_data(name, spdx):
    assert by_name(name) == spdx
    term = resolve(name)
    assert (term.key, term.how) == ((spdx, "name") if spdx else (None, "unknown"))


async def test_trivy_spdx_license_name_is_refused_when_the_license_it_names_is_prohibited():
    sbom = sbom_of(TRIVY_SPDX)
    assert {c["name"]: c["licenses"] for c in sbom.components}["bash"] == ["GPLv3+"]
    result = await judge(LICENSES, context(MemoryLedger(sbom=sbom), prohibited_licenses=["GPL-3.0-or-later"]))
    assert result.status.value == "failed"
    assert result.reason == (
        "1 component needs a prohibited license: bash 4.2.46 (`GPLv3+`, read as GPL-3.0-or-later) needs GPL-3.0-or-later"
    )
    assert result.evidence["read_as"] == [
        {"component": "bash 4.2.46", "expression": "GPLv3+", "license": "GPLv3+", "spdx": "GPL-3.0-or-later"}
    ]
    passed = await judge(LICENSES, context(MemoryLedger(sbom=sbom), prohibited_licenses=["AGPL-3.0-only"]))
    assert passed.status.value == "passed"
    assert "license names read as SPDX ids: GPLv3+ as GPL-3.0-or-later" in passed.reason
    assert "2 components have no license information" in passed.reason  # the image and the OS


@pytest.mark.parametrize(
    "licenses, prohibited, needs",
    [
        (["Apache License 2.0"], ["Apache-2.0"], "Apache-2.0"),
        (["MIT License"], ["MIT"], "MIT"),
        (["MIT License AND GPLv2"], ["GPL-2.0-only"], "GPL-2.0-only"),
    ],
)
async def test_names_that_are_not_spdx_ids_block_when_what_they_name_is_prohibited(licenses, prohibited, needs):
    sbom = sbom_record([component("x", *licenses)])
    result = await judge(LICENSES, context(MemoryLedger(sbom=sbom), prohibited_licenses=prohibited))
    assert result.status.value == "failed" and result.reason.endswith(f"needs {needs}")


async def test_licenserefs_the_sbom_defines_are_custom_licenses_with_their_names():
    sbom = sbom_of(SPDX_EXAMPLE)
    glibc = next(c for c in sbom.components if c["name"] == "glibc")
    assert glibc["license_refs"] == {"LicenseRef-3": "CyberNeko License"}
    result = await judge(LICENSES, context(MemoryLedger(sbom=sbom)))
    assert result.status.value == "passed" and result.evidence["unknown"] == []
    assert "custom licenses defined in the SBOM: LicenseRef-3 “CyberNeko License”" in result.reason
    assert "does not parse" not in result.reason


async def test_a_passing_or_names_the_branch_that_allowed_it():
    sbom = sbom_of(SPDX_EXAMPLE)
    result = await judge(LICENSES, context(MemoryLedger(sbom=sbom), prohibited_licenses=["LGPL-2.0-only"]))
    assert result.status.value == "passed", result.reason
    assert "glibc 2.11.1 is allowed through LicenseRef-3 “CyberNeko License” (not LGPL-2.0-only)" in result.reason
    [choice] = [c for c in result.evidence["choices"] if c["refused"]]
    assert choice["allowed_by"] == "LicenseRef-3 “CyberNeko License”"
    both = await judge(
        LICENSES, context(MemoryLedger(sbom=sbom), prohibited_licenses=["LGPL-2.0-only", "LicenseRef-3"])
    )
    assert both.status.value == "failed" and "glibc 2.11.1" in both.reason
    assert both.evidence["violations"][0]["prohibited"] == ["LGPL-2.0-only", "LicenseRef-3"]


async def test_a_licenseref_the_sbom_does_not_define_is_unknown():
    result = await judge(LICENSES, context(MemoryLedger(sbom=sbom_record([component("x", "LicenseRef-acme")]))))
    assert result.evidence["unknown"][0]["problem"] == "a LicenseRef that the SBOM does not define"


@pytest.mark.parametrize(
    "setting, status, says",
    [
        (
            "allow",
            "passed",
            "2 licenses cannot be identified (policy.unknown_licenses: allow): `some additional` in c-with-name, "
            "s-with-name; `some commercial license` in c-with-name, s-with-name",
        ),
        ("warn", "passed", "2 licenses cannot be identified (policy.unknown_licenses: warn)"),
        (
            "block",
            "failed",
            "2 components need a license that cannot be identified (policy.unknown_licenses: block): "
            "c-with-name (`some additional AND some commercial license`) needs `some additional` and "
            "`some commercial license`, which cannot be identified; s-with-name",
        ),
    ],
)
async def test_unknown_licenses_policy(setting, status, says):
    ctx = context(MemoryLedger(sbom=sbom_of(CDX_LICENSES)), unknown_licenses=setting)
    result = await judge(LICENSES, ctx)
    assert result.status.value == status, result.reason
    assert says in result.reason
    assert result.evidence["unknown_licenses"] == setting
    assert {u["license"] for u in result.evidence["unknown"]} == {"some additional", "some commercial license"}


async def test_block_still_lets_an_or_choose_the_identified_branch():
    sbom = sbom_record([component("x", "MIT OR Acme Commercial"), component("y", "Acme Commercial OR Other Deal")])
    result = await judge(LICENSES, context(MemoryLedger(sbom=sbom), unknown_licenses="block"))
    assert result.status.value == "failed"
    assert [v["component"] for v in result.evidence["violations"]] == ["y 1.0"]
    assert any(c["component"] == "x 1.0" and c["allowed_by"] == "MIT" for c in result.evidence["choices"])


def test_unknown_licenses_setting_defaults_to_warn_and_is_checked():
    assert parse_config(BASE_CONFIG).policy.unknown_licenses == "warn"
    with pytest.raises(ConfigError) as err:
        parse_config(BASE_CONFIG + "policy:\n  unknown_licenses: ignore\n")
    assert "policy.unknown_licenses" in str(err.value)
