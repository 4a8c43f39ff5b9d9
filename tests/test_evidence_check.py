"""Issue 12 end to end: real public reports sent through the pipeline API (and the shell and
`promobot report`), read back in the gate report of `/promote … --check`.

Points 1–3 and 6 here; multi-arch images and reproducible builds (4, 5) need the real registry and
are in tests/test_image_evidence_check.py.
"""

from __future__ import annotations

import pytest

from tests.harness import CONFIG, TAG, all_text, fixture_json, header_text, request_card, seed
from tests.test_cli import promobot

VEX = "vex/cdx-vex-cisa-case1-{}.json"


async def check(h, service: str = "api-gateway") -> str:
    """The text of the `--check` reply for ``service`` TAG into production."""
    user = h.user("U0DEV")
    await user.command("/promote", f"{service} {TAG} to production --check")
    reply = (await h.wait(lambda s: user.replies()))[0]
    text = all_text(reply)
    assert "(check only; nothing was requested)" in text, text
    return text


def gate(text: str, title: str) -> str:
    """The one line of the gate report for the gate titled ``title``."""
    [line] = [line for line in text.splitlines() if f"*{title}*:" in line]
    return line


async def send(h, kind: str, fixture: str, **fields) -> tuple[int, dict]:
    if kind == "scan":
        body = {"type": "scan.finished", "scanner": "cyclonedx", "report": fixture_json(fixture)}
    else:
        body = {"type": "sbom.published", "format": "spdx", "sbom": fixture_json(fixture)}
    return await h.event({"service": "api-gateway", "tag": TAG, **body, **fields})


# --- 1. CycloneDX VEX ----------------------------------------------------------------------


async def test_vex_waivers_show_in_the_check_and_an_sbom_is_no_scan(harness):
    h = harness
    await seed(h)
    assert (await send(h, "scan", VEX.format("not_affected")))[0] == 202
    line = gate(await check(h), "Vulnerabilities")
    assert line == (
        ":white_check_mark: *Vulnerabilities*: no CRITICAL vulnerability (cyclonedx: no findings); "
        "waived by the VEX: CVE-2021-44228 in ABC 4.2 (not_affected: code_not_present)"
    )

    assert (await send(h, "scan", "vex/cdx-vex-cisa-case1-false_positive.EDITED.json"))[0] == 202
    line = gate(await check(h), "Vulnerabilities")
    assert "waived by the VEX: CVE-2021-44228 in ABC 4.2 (false_positive: This version of Product ABC" in line

    assert (await send(h, "scan", VEX.format("under_investigation")))[0] == 202
    line = gate(await check(h), "Vulnerabilities")
    assert line.startswith(":x: *Vulnerabilities*: 1 CRITICAL vulnerability: CVE-2021-44228 in GHI")
    assert "(no fix yet; VEX: in_triage)" in line

    # an SBOM sent as a scan is refused and not recorded: the in_triage finding still blocks
    status, answer = await send(h, "scan", "sbom/cyclonedx-1.6-licenses-id-expression-name.json")
    assert status == 400
    assert answer["problems"] == [
        "report: cyclonedx report: not a vulnerability report: expected a vulnerabilities section, found a "
        "CycloneDX 1.6 document with 3 components, 3 services; an SBOM goes in sbom.published"
    ]
    assert "VEX: in_triage" in gate(await check(h), "Vulnerabilities")


# --- 2. SARIF --------------------------------------------------------------------------------


async def test_grype_sarif_critical_blocks_whatever_its_cvss_number(harness):
    h = harness
    await seed(h)
    status, _ = await send(h, "scan", "sarif/grype-sarif-image-snapshot.json", scanner="sarif")
    assert status == 202
    line = gate(await check(h), "Vulnerabilities")
    assert line.startswith(
        ":x: *Vulnerabilities*: 1 CRITICAL vulnerability: CVE-1999-0002 in package-2 2.2.2 (no fix yet)"
    )
    assert "CVE-1999-0002-package-2" not in line  # the CVE, not Grype's rule id


EXCEPTED = CONFIG.replace(
    "  require_sbom: true\n",
    "  require_sbom: true\n  vulnerability_exceptions:\n"
    "    - {id: CVE-1999-0002, until: '2099-01-31', reason: package-2 is not shipped}\n",
)


@pytest.mark.parametrize("config_text", [EXCEPTED])
async def test_an_exception_for_the_cve_matches_a_sarif_rule_and_old_trivy_sarif_is_rated(harness):
    h = harness
    await seed(h)
    assert (await send(h, "scan", "sarif/grype-sarif-image-snapshot.json", scanner="sarif"))[0] == 202
    line = gate(await check(h), "Vulnerabilities")
    assert line == (
        ":white_check_mark: *Vulnerabilities*: no CRITICAL vulnerability outside the exceptions "
        "(sarif: 1 CRITICAL, 1 LOW); excepted: CVE-1999-0002 until 2099-01-31"
    )
    # the old contrib template marks everything level "error": the rule ids carry the real severities
    template = "sarif/trivy-alpine-3.10-sarif-contrib-template.json"
    assert (await send(h, "scan", template, scanner="sarif"))[0] == 202
    line = gate(await check(h), "Vulnerabilities")
    assert line == ":white_check_mark: *Vulnerabilities*: no CRITICAL vulnerability (sarif: 4 MEDIUM, 1 LOW)"


# --- 3. license names, custom licenses, OR branches, policy.unknown_licenses --------------------

PROHIBITING = CONFIG.replace(
    "prohibited_licenses: [AGPL-3.0-only]", "prohibited_licenses: [AGPL-3.0-only, GPL-3.0-or-later, LGPL-2.0-only]"
)


@pytest.mark.parametrize("config_text", [PROHIBITING])
async def test_license_names_custom_licenses_and_or_choices_in_the_check(harness):
    h = harness
    await seed(h)
    assert (await send(h, "sbom", "sbom/trivy-spdx-2.2-centos-7.json"))[0] == 202
    line = gate(await check(h), "Licenses")
    assert line.startswith(
        ":x: *Licenses*: 1 component needs a prohibited license: bash 4.2.46 (`GPLv3+`, read as "
        "GPL-3.0-or-later) needs GPL-3.0-or-later"
    )

    assert (await send(h, "sbom", "sbom/spdx-2.3-spec-example.json"))[0] == 202
    line = gate(await check(h), "Licenses")
    assert line.startswith(":white_check_mark: *Licenses*: none of 4 components needs a prohibited license")
    assert "glibc 2.11.1 is allowed through LicenseRef-3 “CyberNeko License” (not LGPL-2.0-only)" in line
    assert "custom licenses defined in the SBOM: LicenseRef-3 “CyberNeko License”" in line
    assert "does not parse" not in line and "cannot be identified" not in line


async def test_the_card_shows_the_unknown_licenses_setting(harness):
    h = harness
    await seed(h)  # its CycloneDX SBOM names two licenses by free text
    await request_card(h)
    card = all_text(h.cards()[-1])
    assert "Waiting for approval" in header_text(h.cards()[-1])
    assert (
        "*Licenses*: none of 6 components needs a prohibited license; 2 licenses cannot be identified "
        "(policy.unknown_licenses: warn): `some additional` in c-with-name, s-with-name; "
        "`some commercial license` in c-with-name, s-with-name"
    ) in card


@pytest.mark.parametrize("config_text", [CONFIG.replace("  require_sbom: true\n", "  unknown_licenses: block\n")])
async def test_unknown_licenses_block_refuses_in_the_check(harness):
    h = harness
    await seed(h)
    line = gate(await check(h), "Licenses")
    assert line.startswith(
        ":x: *Licenses*: 2 components need a license that cannot be identified (policy.unknown_licenses: block): "
        "c-with-name (`some additional AND some commercial license`) needs `some additional` and "
        "`some commercial license`, which cannot be identified"
    )


# --- 6. bad files never crash a command --------------------------------------------------------


async def test_the_api_names_what_it_expected_and_found(harness):
    h = harness
    await seed(h)
    status, answer = await send(h, "sbom", "sbom/spdx-3.0.1-jsonld-package-sbom.json")
    assert status == 400
    [problem] = answer["problems"]
    assert problem.startswith(
        "sbom: spdx sbom: expected SPDX 2.x JSON (spdxVersion SPDX-2.x), found SPDX 3 JSON-LD "
        "(@context https://spdx.org/rdf/3.0.1/spdx-context.jsonld)"
    )
    status, answer = await send(h, "scan", "grype/grype-image-presenter-snapshot.json", scanner="trivy")
    assert status == 400 and answer["problems"] == [
        "report: trivy report: expected Trivy JSON (SchemaVersion and Results), found a Grype JSON report (matches)"
    ]
    # nothing was recorded: the seeded scan and SBOM are what the gates read
    text = await check(h)
    assert gate(text, "Vulnerabilities").endswith("(trivy: 1 MEDIUM, 2 LOW)")
    assert "cyclonedx SBOM with 6 components" in gate(text, "SBOM present")


def test_shell_and_report_give_one_line_per_bad_file_and_keep_running(tmp_path):
    from tests.harness import FIXTURES

    notes = tmp_path / "notes.txt"
    notes.write_text("trivy scan finished: 0 critical\n")
    grype = FIXTURES / "grype" / "grype-image-presenter-snapshot.json"
    spdx3 = FIXTURES / "sbom" / "spdx-3.0.1-jsonld-package-sbom.json"
    lines = [
        f"event scan.finished service=api-gateway tag=7a3f9c2 scanner=trivy report=@{notes}",
        f"event sbom.published service=api-gateway tag=7a3f9c2 format=spdx sbom=@{spdx3}",
        f"event scan.finished service=api-gateway tag=7a3f9c2 scanner=trivy report=@{grype}",
        f"event scan.finished service=api-gateway tag=7a3f9c2 scanner=trivy report=@{tmp_path / 'missing.json'}",
        "/promote api-gateway 7a3f9c2 to production --check",
    ]
    result = promobot("shell", "--demo", "--script", "-", tmp_path=tmp_path, stdin="\n".join(lines) + "\n")
    out = result.stdout
    assert result.returncode == 0 and "Traceback" not in out + result.stderr, result.stderr
    said = [line for line in out.splitlines() if line.startswith(("! ", "400 "))]
    assert said == [
        f"! report=@{notes}: expected a JSON scanner report, found text that is not JSON "
        "(Expecting value: line 1 column 1 (char 0))",
        f"400 invalid event: sbom=@{spdx3}: spdx sbom: expected SPDX 2.x JSON (spdxVersion SPDX-2.x), found SPDX 3 "
        "JSON-LD (@context https://spdx.org/rdf/3.0.1/spdx-context.jsonld), which promobot does not read; send "
        "SPDX 2.3 JSON (e.g. trivy --format spdx-json)",
        f"400 invalid event: report=@{grype}: trivy report: expected Trivy JSON (SchemaVersion and Results), "
        "found a Grype JSON report (matches)",
        f"! report=@{tmp_path / 'missing.json'}: expected a JSON scanner report, but the file cannot be read "
        "(No such file or directory)",
    ]
    # the shell went on, and the gate report still reads the demo's own scan and SBOM
    check = out.split("--check")[-1]
    assert "is eligible (check only; nothing was requested)" in check
    assert "*Vulnerabilities*: no CRITICAL vulnerability (trivy: 1 MEDIUM, 2 LOW)" in check
    assert "*SBOM present*: cyclonedx SBOM with 6 components" in check

    sent = promobot(
        "report",
        "scan.finished",
        "--service",
        "api-gateway",
        "--tag",
        "7a3f9c2",
        "--scanner",
        "trivy",
        "--report-file",
        str(notes),
        tmp_path=tmp_path,
        env={"PROMOBOT_URL": "http://127.0.0.1:9", "PROMOBOT_API_TOKEN": "t"},
    )
    assert sent.returncode == 1 and sent.stdout == ""
    assert sent.stderr == (
        f"error: --report-file {notes}: expected a JSON scanner report, found text that is not JSON "
        "(Expecting value: line 1 column 1 (char 0))\n"
    )
    sent = promobot(
        "report",
        "scan.finished",
        "--service",
        "api-gateway",
        "--tag",
        "7a3f9c2",
        "--scanner",
        "trivy",
        "--report-file",
        str(grype),
        tmp_path=tmp_path,
        env={"PROMOBOT_URL": "http://127.0.0.1:9", "PROMOBOT_API_TOKEN": "t"},
    )
    assert sent.returncode == 1 and sent.stderr == (
        f"error: --report-file {grype}: trivy report: expected Trivy JSON (SchemaVersion and Results), found a "
        "Grype JSON report (matches)\n"
    )
