"""Which gates run for a target environment, in the order reports show them."""

from __future__ import annotations

import importlib
from dataclasses import replace

from checks.base import Gate
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


def _load(name: str) -> Gate:
    # Every gate in ORDER is required: a missing module must fail loudly, never skip a rule.
    return importlib.import_module(f"checks.{name}").GATE


def gates_for(config, environment: str, *, kind: str = PromotionKind.PROMOTION) -> list[Gate]:
    """The gates switched on for ``environment`` (``checks:`` in promobot.yml)."""
    toggles = config.environment(environment).checks
    out = []
    for name in ORDER:
        if not getattr(toggles, name, True):
            continue
        if (kind == PromotionKind.ROLLBACK and name in NOT_FOR_ROLLBACK) or (
            kind != PromotionKind.ROLLBACK and name in ONLY_FOR_ROLLBACK
        ):
            continue
        out.append(replace(_load(name), timeout=toggles.gate_timeout))
    return out
