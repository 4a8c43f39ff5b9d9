"""SPDX 2.x JSON SBOMs: each package's license, and the custom licenses the document defines.

``licenseConcluded`` is the license the SBOM's author settled on; when it says nothing
(NOASSERTION, NONE) the declared license stands. ``hasExtractedLicensingInfos`` defines
``LicenseRef-*`` licenses; a package that uses one carries its name in ``license_refs``.
SPDX 3 (JSON-LD) is a different model and is refused by name.
"""

from __future__ import annotations

import re
from typing import Any

from checks.reports.common import NO_LICENSE, ReportError, component, describe, list_of, need

WHERE = "spdx sbom"
_REF = re.compile(r"\bLicenseRef-[A-Za-z0-9.\-]+")


def _defined(sbom: dict) -> dict[str, str]:
    """``LicenseRef-*`` id → its name (the id again when the SBOM gives no name)."""
    out: dict[str, str] = {}
    for info in list_of(sbom, "hasExtractedLicensingInfos", WHERE):
        if isinstance(info, dict) and isinstance(info.get("licenseId"), str):
            ref = info["licenseId"].strip()
            out[ref] = str(info.get("name") or "").strip() or ref
    return out


def parse_sbom(sbom: dict) -> list[dict[str, Any]]:
    version = str(sbom.get("spdxVersion", ""))
    if not version.startswith("SPDX-2."):
        found = describe(sbom)
        if "@context" in sbom:
            found += ", which promobot does not read; send SPDX 2.3 JSON (e.g. trivy --format spdx-json)"
        raise ReportError(f"{WHERE}: expected SPDX 2.x JSON (spdxVersion SPDX-2.x), found {found}")
    defined = _defined(sbom)
    components = []
    for i, p in enumerate(list_of(sbom, "packages", WHERE)):
        need(isinstance(p, dict) and isinstance(p.get("name"), str), f"{WHERE}: packages[{i}]", "missing name")
        concluded = str(p.get("licenseConcluded") or "")
        # a conclusion of NOASSERTION/NONE says nothing, so the declared license stands
        chosen = concluded if concluded.strip().upper() not in NO_LICENSE else str(p.get("licenseDeclared") or "")
        c = component(p["name"], p.get("versionInfo"), [chosen])
        refs = {ref: defined[ref] for ref in _REF.findall(chosen) if ref in defined}
        if refs:
            c["license_refs"] = refs
        components.append(c)
    return components
