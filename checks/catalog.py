"""Which gates run for a target environment, in the order reports show them.

Every gate that applies to the kind of request appears in the report: a gate switched off for the
environment (``checks:`` in promobot.yml) answers *off*, and a gate an expedited promotion skips
answers *skipped*, each with the reason; neither blocks, and neither is silently left out.
"""

from __future__ import annotations

import importlib
from dataclasses import replace

from bot.config import PromobotConfig
from checks.base import Expedite, Gate, GateStatus
from storage.statuses import PromotionKind

# Gate module names, in report order. Each module exposes GATE.
ORDER = (
    "environment_lock",
    "artifact_hold",
    "known_good",
    "immutable_tag",
    "digest_matches",
    "metadata_complete",
    "source_commit_reachable",
    "previous_environment_verified",
    "no_skipped_environment",
    "soak_time",
    "vulnerabilities",
    "licenses",
    "sbom_present",
    "deployment_window",
)

# Gates that make no sense for a rollback: the artifact comes back from the target's own history.
NOT_FOR_ROLLBACK = {"previous_environment_verified", "no_skipped_environment", "soak_time"}
ONLY_FOR_ROLLBACK = {"known_good"}

# What an expedited promotion may skip (the promotion model's exception for critical security patches):
# the intermediate environment (only when it really skips one), its soak and the deployment window.
# Everything else, the artifact, security, license, SBOM, lock and hold gates, always runs; "previous
# environment verified" runs against the environment the artifact actually comes from.
EXPEDITE_MAY_SKIP = ("no_skipped_environment", "soak_time", "deployment_window")


def _load(name: str) -> Gate:
    # Every gate in ORDER is required: a missing module must fail loudly, never skip a rule.
    return importlib.import_module(f"checks.{name}").GATE


def skipped_by_expedite(name: str, expedite: Expedite | None) -> bool:
    if expedite is None or name not in EXPEDITE_MAY_SKIP:
        return False
    return name != "no_skipped_environment" or bool(expedite.skipped_environments)


def _skip_reason(name: str, expedite: Expedite) -> str:
    what = {
        "no_skipped_environment": f"{', '.join(expedite.skipped_environments)} is skipped",
        "soak_time": "no soak is required",
        "deployment_window": "the deployment window and freezes do not apply",
    }[name]
    return f"skipped for expedite: {what} ({expedite.reason})"


def gates_for(
    config: PromobotConfig,
    environment: str,
    *,
    kind: str = PromotionKind.PROMOTION,
    expedite: Expedite | None = None,
) -> list[Gate]:
    """Every gate for a request into ``environment``; those switched off there (``checks:`` in
    promobot.yml) or skipped by ``expedite`` answer so without being evaluated."""
    toggles = config.environment(environment).checks
    out = []
    for name in ORDER:
        if (kind == PromotionKind.ROLLBACK and name in NOT_FOR_ROLLBACK) or (
            kind != PromotionKind.ROLLBACK and name in ONLY_FOR_ROLLBACK
        ):
            continue
        gate = replace(_load(name), timeout=toggles.gate_timeout)
        if not getattr(toggles, name, True):
            gate = gate.settled(
                GateStatus.OFF,
                f"off by configuration (environments.{environment}.checks.{name}: false)",
                setting=f"environments.{environment}.checks.{name}",
            )
        elif skipped_by_expedite(name, expedite):
            assert expedite is not None
            gate = gate.settled(GateStatus.SKIPPED, _skip_reason(name, expedite), expedite=expedite.to_json())
        out.append(gate)
    return out
