"""Is this run the one promobot dispatched? The pure checks shared by webhook linking, polling and
deploy authorization.

A run belongs to a promotion only when it is a run of the service's configured deploy workflow, with event
``workflow_dispatch``, and either its id is the one recorded at dispatch or, only while none is recorded,
its name carries the promotion id and promobot's own GitHub identity started it.
"""

from __future__ import annotations

import re

from bot.engine.roles import RunInfo

PROMOTION_ID = re.compile(r"\bprm-[0-9a-f]{10}\b")
DISPATCH_EVENT = "workflow_dispatch"


def workflow_file(path: str | None) -> str | None:
    """The file name of a run's workflow path. GitHub writes ``.github/workflows/deploy.yml``, sometimes
    with ``@ref`` after it or ``owner/repo/`` before it; all three name ``deploy.yml``."""
    if not path:
        return None
    path = path.split("@", 1)[0]
    marker = ".github/workflows/"
    if marker not in path:
        return None
    return path.rsplit(marker, 1)[1] or None


def is_of_workflow(run: RunInfo, workflow: str) -> bool:
    """Whether ``run`` is a run of the configured workflow (a file name such as ``deploy.yml``, or an id)."""
    if workflow.isdigit():
        return run.workflow_id == workflow
    return workflow_file(run.workflow_path) == workflow


def title_names(run: RunInfo, promotion_id: str) -> bool:
    return bool(run.title) and promotion_id in PROMOTION_ID.findall(run.title or "")


def same_login(a: str | None, b: str | None) -> bool:
    """GitHub logins compare without case."""
    return a is not None and b is not None and a.lower() == b.lower()


def not_the_dispatched_run(
    run: RunInfo, *, workflow: str, promotion_id: str, recorded_run_id: str | None, own_login: str | None
) -> tuple[str, str] | None:
    """Why ``run`` is not the run promobot dispatched for the promotion, as (reason code, evidence), or None
    when it is. Checked in the order a reader would: the workflow, the event, who started it, which run."""
    if not is_of_workflow(run, workflow):
        return "wrong_workflow", f"run {run.run_id} is of {run.workflow_path or 'an unknown workflow'}, not {workflow}"
    if run.event != DISPATCH_EVENT:
        return "wrong_event", f"run {run.run_id} was started by a {run.event or 'unknown'} event, not {DISPATCH_EVENT}"
    if own_login is None:
        return "unverifiable", "promobot does not know its own GitHub identity, so it cannot tell who started the run"
    if not same_login(run.actor, own_login):
        return "wrong_actor", f"run {run.run_id} was started by {run.actor or 'an unknown actor'}, not by {own_login}"
    if recorded_run_id is not None and run.run_id != recorded_run_id:
        return (
            "not_the_dispatched_run",
            f"promobot dispatched run {recorded_run_id} for {promotion_id}, not {run.run_id}",
        )
    if recorded_run_id is None and not title_names(run, promotion_id):
        return "not_the_dispatched_run", f"run {run.run_id}'s name does not carry {promotion_id}"
    return None
