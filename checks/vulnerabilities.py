"""Vulnerabilities: the artifact's latest scan has no finding at a blocking severity.

A finding is waived by a ``policy.vulnerability_exceptions`` entry with its id
whose ``until`` date is today or later (UTC) and whose ``services`` is empty
or names the service. An expired exception waives nothing and is named.

A CycloneDX VEX entry whose analysis says the product is not affected (not_affected,
resolved, false_positive) is no finding: it is shown as waived by the VEX, with its
justification, and counted apart.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

from checks.base import Gate, GateContext, GateResult
from checks.reports import SEVERITIES, vex_waived
from checks.sbom_present import subject

SHOWN = 5


def _today(now: datetime) -> date:
    # a naive clock is taken to be UTC already
    return (now if now.tzinfo is None else now.astimezone(UTC)).date()


def _counts(findings: Any) -> dict[str, int]:
    c = Counter(f.get("severity", "UNKNOWN") for f in findings)
    return {s: c.get(s, 0) for s in SEVERITIES}


def _describe(f: dict[str, Any]) -> str:
    installed = f" {f['installed']}" if f.get("installed") else ""
    fix = f"fixed in {f['fixed']}" if f.get("fixed") else "no fix yet"
    state = (f.get("vex") or {}).get("state")  # exploitable, in_triage: the VEX says it is a finding
    return f"{f['id']} in {f['package']}{installed} ({fix}{f'; VEX: {state}' if state else ''})"


def _vex_line(f: dict[str, Any]) -> str:
    vex = f.get("vex") or {}
    why = vex.get("justification") or vex.get("detail") or "no justification given"
    installed = f" {f['installed']}" if f.get("installed") else ""
    return f"{f['id']} in {f['package']}{installed} ({vex.get('state')}: {why})"


def _capped(items: list[str]) -> str:
    more = len(items) - SHOWN
    return ", ".join(items[:SHOWN]) + (f" and {more} more" if more > 0 else "")


async def _evaluate(ctx: GateContext) -> GateResult:
    policy = ctx.config.policy
    digest, named = subject(ctx)
    scan = ctx.ledger.latest_scan(ctx.service, ctx.tag, digest)
    if scan is None:
        # where a person approves, a scan is always required: the model's "security scan passed"
        if not policy.require_scan and not ctx.config.is_protected(ctx.target_environment):
            return GATE.passed("no vulnerability scan recorded; none is required (policy.require_scan: false)")
        return GATE.failed(
            f"no vulnerability scan recorded for {named}",
            "Scan the image in the build pipeline and send scan.finished (scanner trivy, grype, sarif or cyclonedx) for this tag.",
        )

    today = _today(ctx.now)
    live: dict[str, Any] = {}
    expired: dict[str, str] = {}
    for ex in policy.vulnerability_exceptions:
        if ex.services and ctx.service not in ex.services:
            continue
        key = ex.id.upper()
        if date.fromisoformat(ex.until) >= today:
            live.setdefault(key, ex)
        else:  # remember the latest expiry, the one people will recognise
            expired[key] = max(expired.get(key, ex.until), ex.until)

    def excepted(f: dict[str, Any]) -> str | None:
        """The live exception's key for a finding: its id, or the scanner's own rule id."""
        return next((k for k in (f["id"].upper(), str(f.get("rule") or "").upper()) if k in live), None)

    findings = [dict(f) for f in scan.findings if not vex_waived(f)]
    by_vex = [dict(f) for f in scan.findings if vex_waived(f)]
    at_blocking = [f for f in findings if f.get("severity") in policy.block_severities]
    blocking = [f for f in at_blocking if excepted(f) is None]
    waived = Counter(excepted(f) for f in at_blocking if excepted(f) is not None)
    applied = [
        {"id": ex.id, "until": ex.until, "reason": ex.reason, "findings": waived[key]}
        for key, ex in live.items()
        if waived[key]
    ]
    evidence = {
        "scanner": scan.scanner,
        "digest": scan.digest,
        "received_at": scan.received_at.isoformat(),
        "block_severities": list(policy.block_severities),
        "counts": _counts(findings),
        "exceptions_applied": applied,
        "waived_by_vex": [
            {"id": f["id"], "package": f["package"], "severity": f.get("severity"), **(f.get("vex") or {})}
            for f in by_vex
        ],
    }
    counts = ", ".join(f"{n} {s}" for s, n in _counts(findings).items() if n) or "no findings"
    vex_note = f"; waived by the VEX: {_capped([_vex_line(f) for f in by_vex])}" if by_vex else ""

    if blocking:
        sev = "/".join(s for s in SEVERITIES if any(f["severity"] == s for f in blocking))
        noun = "vulnerability" if len(blocking) == 1 else "vulnerabilities"
        reason = f"{len(blocking)} {sev} {noun}: {_capped([_describe(f) for f in blocking])}"
        lapsed = sorted({f["id"].upper() for f in blocking} & expired.keys())
        if lapsed:
            reason += "; " + "; ".join(f"the exception for {i} expired on {expired[i]}" for i in lapsed)
        reason += vex_note
        step = (
            "Upgrade the listed packages and rebuild, or add a vulnerability exception "
            "(id, until, reason) to policy.vulnerability_exceptions."
        )
        if lapsed:
            step = "Upgrade the listed packages and rebuild, or renew the expired exception with a new until date."
        return GATE.failed(
            reason,
            step,
            **evidence,
            blocking=blocking,
            blocking_counts=_counts(blocking),
            expired_exceptions=[{"id": i, "expired_on": expired[i]} for i in lapsed],
        )

    blocked = "/".join(policy.block_severities)
    reason = f"no {blocked} vulnerability" if blocked else "no severity blocks promotion"
    reason += f"{' outside the exceptions' if applied else ''} ({scan.scanner}: {counts})"
    if applied:
        reason += "; excepted: " + ", ".join(f"{a['id']} until {a['until']}" for a in applied)
    return GATE.passed(reason + vex_note, **evidence)


GATE = Gate(name="vulnerabilities", title="Vulnerabilities", evaluate=_evaluate)
