"""The rules of promobot.yml that span fields, the promotion model's non-negotiables among them.

They are checked on the plain data (the YAML as read, or a model dumped back), so that
``bot.config.loading`` can report them together with every field mistake at once: pydantic
runs a model's own cross-field validator only once every field is valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Gates the promotion model makes non-negotiable where a person must approve (the last environment
# and every ``protected: true`` one): none of them may be switched off there.
NON_NEGOTIABLE_GATES = (
    "immutable_tag",
    "digest_matches",
    "previous_environment_verified",
    "no_skipped_environment",
    "vulnerabilities",
    "sbom_present",
)
ALWAYS_MUTABLE = "latest"  # a tag name that moves by definition: refused whatever policy.mutable_tags says
ALWAYS_BLOCKING = "CRITICAL"  # "no critical vulnerabilities": a severity teams may add to, never drop
SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (a key path, list indexes as strings) and why."""

    loc: tuple[str, ...]
    message: str


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _entries(value: Any) -> list[tuple[int, dict]]:
    return [(i, e) for i, e in enumerate(value) if isinstance(e, dict)] if isinstance(value, list) else []


def protected_environments(environments: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """The last environment and every one marked ``protected: true``."""
    if not environments:
        return []
    last = environments[-1][0]
    return [(i, e) for i, e in environments if i == last or e.get("protected") is True]


def violations(data: Any) -> list[Violation]:
    """Every cross-field rule ``data`` (promobot.yml as plain values) breaks, in file order."""
    data = _mapping(data)
    out: list[Violation] = []
    raw_envs = data.get("environments")
    envs = _entries(raw_envs)
    names = [str(e.get("name")) for _, e in envs if e.get("name") is not None]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        out.append(Violation(("environments",), f"names must be unique, repeated: {', '.join(dupes)}"))
    last_index = len(raw_envs) - 1 if isinstance(raw_envs, list) else -1
    for i, env in protected_environments(envs):
        name = env.get("name", f"#{i}")
        why = "the last environment" if i == last_index else "protected: true"
        approval = env.get("approval", "none")
        if approval != "manual":
            lead = "the last environment needs" if i == last_index else f"{name} is protected: it needs"
            out.append(
                Violation(
                    ("environments", str(i), "approval"),
                    f"{lead} approval: manual, not {approval!r} (production changes need a person's approval; "
                    "the promotion model allows no automatic production deployment)",
                )
            )
        checks = _mapping(env.get("checks"))
        for gate in NON_NEGOTIABLE_GATES:
            if checks.get(gate) is False:
                out.append(
                    Violation(
                        ("environments", str(i), "checks", gate),
                        f"{gate} cannot be switched off in {name} ({why}): the promotion model makes the immutable "
                        "tag, digest, previous environment verified, no skipped environment, vulnerabilities and "
                        "SBOM gates non-negotiable where a person approves; remove this line",
                    )
                )
    for svc in _mapping(data.get("services")):
        if not SERVICE_NAME.fullmatch(str(svc)):
            out.append(
                Violation(("services", str(svc)), "service names must be lowercase letters, digits, '.', '-' or '_'")
            )
    services = _mapping(data.get("services"))
    for i, digest in _entries(data.get("digests")):
        listed = digest.get("services")
        unknown = [str(s) for s in listed if s not in services] if isinstance(listed, list) else []
        if unknown:
            out.append(Violation(("digests", str(i), "services"), f"unknown service(s) {', '.join(unknown)}"))
    policy = _mapping(data.get("policy"))
    accepting = policy.get("out_of_band_environments")
    unknown_envs = [str(e) for e in accepting if e not in names] if isinstance(accepting, list) else []
    if unknown_envs:
        out.append(
            Violation(
                ("policy", "out_of_band_environments"),
                f"unknown environment(s) {', '.join(unknown_envs)} (known: {', '.join(names)})",
            )
        )
    severities = policy.get("block_severities")
    if isinstance(severities, list) and ALWAYS_BLOCKING not in {str(s).upper() for s in severities}:
        out.append(
            Violation(
                ("policy", "block_severities"),
                f"must include {ALWAYS_BLOCKING}: the promotion model refuses artifacts with critical "
                "vulnerabilities (add HIGH or others if you like; use vulnerability_exceptions for a single CVE)",
            )
        )
    expedite = _mapping(policy.get("expedite"))
    needed = expedite.get("required_approvals", 2) if expedite else None
    if isinstance(needed, int) and not isinstance(needed, bool):
        # the normal count of every environment a person approves (manual, protected or last)
        guarded = {i for i, _ in protected_environments(envs)} | {i for i, e in envs if e.get("approval") == "manual"}
        normal = [
            (e.get("required_approvals", 1), str(e.get("name", f"#{i}")))
            for i, e in envs
            if i in guarded and isinstance(e.get("required_approvals", 1), int)
        ]
        highest = max(normal, default=None)
        if highest is not None and needed <= highest[0]:
            out.append(
                Violation(
                    ("policy", "expedite", "required_approvals"),
                    f"an expedited promotion needs more approvals than a normal one: {needed} is not more than "
                    f"{highest[1]}'s required_approvals {highest[0]}",
                )
            )
    return out
