"""Telling promobot's own dispatch from any other run: the pure checks, table-driven."""

from __future__ import annotations

import pytest

from bot.engine.roles import RunInfo
from bot.engine.run_identity import not_the_dispatched_run, workflow_file

PID = "prm-0123456789"


@pytest.mark.parametrize(
    "path, expected",
    [
        (".github/workflows/deploy.yml", "deploy.yml"),
        (".github/workflows/deploy.yml@main", "deploy.yml"),  # GitHub's REST example
        ("octocat/octo-repo/.github/workflows/deploy.yml@refs/heads/main", "deploy.yml"),  # the OpenAPI example
        (".github/workflows/ci.yml", "ci.yml"),
        ("deploy.yml", None),
        ("", None),
        (None, None),
    ],
)
def test_workflow_file_reads_every_form_of_a_runs_path(path, expected):
    assert workflow_file(path) == expected


def run(**kw) -> RunInfo:
    values = dict(
        run_id="42",
        url=None,
        title=f"Deploy production 7a3f9c2 [{PID}]",
        workflow_path=".github/workflows/deploy.yml@main",
        workflow_id="161335",
        event="workflow_dispatch",
        actor="promobot[bot]",
    )
    values.update(kw)
    return RunInfo(**values)


@pytest.mark.parametrize(
    "changes, recorded, reason",
    [
        ({}, "42", None),
        ({}, None, None),  # nothing recorded yet (GHES): the name carries the promotion id
        ({"actor": "PromoBot[BOT]"}, "42", None),  # logins compare without case
        ({"workflow_path": ".github/workflows/ci.yml"}, "42", "wrong_workflow"),
        ({"event": "pull_request"}, "42", "wrong_event"),
        ({"event": "push"}, None, "wrong_event"),
        ({"actor": "mallory"}, "42", "wrong_actor"),
        ({"run_id": "43"}, "42", "not_the_dispatched_run"),
        ({"title": "Deploy production 7a3f9c2"}, None, "not_the_dispatched_run"),
        ({"title": f"Deploy [{PID}]", "run_id": "43"}, "42", "not_the_dispatched_run"),  # a recorded id wins
    ],
)
def test_only_the_dispatched_run_of_the_configured_workflow_passes(changes, recorded, reason):
    problem = not_the_dispatched_run(
        run(**changes), workflow="deploy.yml", promotion_id=PID, recorded_run_id=recorded, own_login="promobot[bot]"
    )
    assert (problem[0] if problem else None) == reason


def test_a_workflow_named_by_id_compares_ids_and_no_identity_verifies_nothing():
    assert (
        not_the_dispatched_run(
            run(), workflow="161335", promotion_id=PID, recorded_run_id="42", own_login="promobot[bot]"
        )
        is None
    )
    assert (
        not_the_dispatched_run(run(), workflow="99", promotion_id=PID, recorded_run_id="42", own_login="promobot[bot]")[
            0
        ]
        == "wrong_workflow"
    )
    assert (
        not_the_dispatched_run(run(), workflow="deploy.yml", promotion_id=PID, recorded_run_id="42", own_login=None)[0]
        == "unverifiable"
    )
