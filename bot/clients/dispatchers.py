"""Asking the team's deploy workflow to run: the engine's Dispatcher role, implemented.

``GitHubDispatcher`` speaks to GitHub (or GHES) through PyGithub;
``DryRunDispatcher`` stands in when no GitHub credentials are set and shows
exactly what it would have sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from github import GithubException

from bot.engine.roles import DispatchError, DispatchRequest, RunInfo, describe

log = logging.getLogger(__name__)

SECONDARY_RATE_LIMIT_WAIT = 60.0


def retry_after_seconds(headers: dict[str, Any] | None, now: float | None = None) -> float | None:
    """GitHub's own word on when to come back: Retry-After, else X-RateLimit-Reset when exhausted."""
    if not headers:
        return None
    h = {str(k).lower(): v for k, v in headers.items()}
    if h.get("retry-after"):
        try:
            return max(0.0, float(h["retry-after"]))
        except ValueError:
            try:  # the HTTP-date form
                return max(0.0, parsedate_to_datetime(h["retry-after"]).timestamp() - (now or time.time()))
            except (TypeError, ValueError):
                pass
    if str(h.get("x-ratelimit-remaining", "")) == "0" and h.get("x-ratelimit-reset"):
        try:
            return max(0.0, float(h["x-ratelimit-reset"]) - (now or time.time()))
        except ValueError:
            pass
    return None


def run_info(run: Any) -> RunInfo:
    """A PyGithub ``WorkflowRun`` as the engine reads it."""

    def login(user: Any) -> str | None:
        return getattr(user, "login", None) if user is not None else None

    return RunInfo(
        str(run.id),
        run.html_url,
        run.status,
        run.conclusion,
        getattr(run, "display_title", None) or run.name,
        workflow_path=run.path,
        workflow_id=str(run.workflow_id) if run.workflow_id is not None else None,
        event=run.event,
        actor=login(run.actor),
        triggering_actor=login(run.triggering_actor),
        run_attempt=run.run_attempt,
        head_branch=run.head_branch,
    )


class GitHubDispatcher:
    """workflow_dispatch through PyGithub; blocking calls run in a worker thread."""

    dry_run = False

    def __init__(
        self,
        github_factory: Callable[[], Any],
        timeout: float = 20.0,
        http_timeout: float = 15.0,
        *,
        login: Callable[[], str] | None = None,
    ):
        self._github_factory = github_factory
        self._timeout = timeout
        self._http_timeout = http_timeout
        self._login = login  # asks GitHub who promobot is (GET /user, or GET /app for an App)
        self._own_login: str | None = None

    def _error(self, exc: Exception, *, sending: bool) -> DispatchError:
        if isinstance(exc, GithubException):
            status = exc.status
            retry_after = retry_after_seconds(exc.headers)
            message = (exc.data or {}).get("message") if isinstance(exc.data, dict) else None
            secondary = status in (403, 429) and "secondary rate limit" in (message or "").lower()
            if secondary and retry_after is None:
                retry_after = SECONDARY_RATE_LIMIT_WAIT  # GitHub: without Retry-After, wait at least a minute
            rate_limited = status == 429 or (status == 403 and retry_after is not None)
            retryable = status >= 500 or rate_limited
            # A 5xx may come after GitHub accepted the dispatch; a 4xx means it refused it.
            return DispatchError(
                f"GitHub answered {status}: {message or 'no message'}",
                retryable=retryable,
                maybe_sent=sending and status >= 500,
                retry_after=retry_after,
                status=status,
            )
        return DispatchError(
            f"GitHub could not be reached: {type(exc).__name__}", retryable=True, maybe_sent=sending, retry_after=None
        )

    def _workflow(self, request: DispatchRequest) -> Any:
        return self._github_factory().get_repo(request.repository).get_workflow(request.workflow)

    def _workflow_sync(self, request: DispatchRequest) -> Any:
        try:
            return self._workflow(request)
        except Exception as exc:
            raise self._error(exc, sending=False) from None

    def _send_sync(self, workflow: Any, request: DispatchRequest) -> RunInfo:
        """The one call that may start a run: a single POST, nothing else in this thread."""
        try:
            result = workflow.create_dispatch(request.ref, inputs=request.inputs, throw=True, return_run_details=True)
        except Exception as exc:
            raise self._error(exc, sending=True) from None
        run_id = getattr(result, "id", None) if not isinstance(result, bool) else None
        if run_id is None:
            return RunInfo(None, None, "queued")
        return RunInfo(str(run_id), getattr(result, "html_url", None), "queued")

    def _find_run_sync(self, request: DispatchRequest, since: datetime, login: str) -> RunInfo | None:
        """Only runs promobot itself started: a person's run quoting the promotion id is not its dispatch."""
        try:
            workflow = self._workflow(request)
            created = (since - timedelta(minutes=2)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            runs = workflow.get_runs(actor=login, event="workflow_dispatch", created=f">={created}")
            for n, run in enumerate(runs):
                info = run_info(run)
                if info.actor and info.actor.lower() == login.lower() and request.promotion_id in (info.title or ""):
                    return info
                if n >= 200:
                    break
        except Exception as exc:
            raise self._error(exc, sending=False) from None
        return None

    def _get_run_sync(self, repository: str, run_id: str) -> RunInfo:
        try:
            return run_info(self._github_factory().get_repo(repository).get_workflow_run(int(run_id)))
        except Exception as exc:
            raise self._error(exc, sending=False) from None

    def _login_sync(self) -> str:
        if self._login is None:
            raise DispatchError("promobot's GitHub identity is unknown", retryable=False, maybe_sent=False)
        try:
            return self._login()
        except Exception as exc:
            raise self._error(exc, sending=False) from None

    def _review_sync(self, repository: str, run_id: str, environment: str, state: str, comment: str) -> None:
        """``POST /repos/{repo}/actions/runs/{run_id}/deployment_protection_rule`` (PyGithub has no method for
        it: its requester is the documented way to call such endpoints). Never sent to a URL from a payload."""
        try:
            self._github_factory().requester.requestJsonAndCheck(
                "POST",
                f"/repos/{repository}/actions/runs/{int(run_id)}/deployment_protection_rule",
                input={"environment_name": environment, "state": state, "comment": comment[:1024]},
            )
        except Exception as exc:
            raise self._error(exc, sending=False) from None

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout=self._timeout)
        except TimeoutError:
            sending = fn == self._send_sync
            # We stopped waiting, but the thread's POST may still go out: retry only after it surely ended
            # (connect and read timeouts of the HTTP client, each), then reconcile first.
            raise DispatchError(
                f"GitHub did not answer within {self._timeout:g}s",
                retryable=True,
                maybe_sent=sending,
                retry_after=2 * self._http_timeout + 5 if sending else None,
            ) from None

    async def dispatch(self, request: DispatchRequest) -> RunInfo:
        workflow = await self._in_thread(self._workflow_sync, request)
        return await self._in_thread(self._send_sync, workflow, request)

    async def find_run(self, request: DispatchRequest, *, since: datetime) -> RunInfo | None:
        login = await self.own_login()
        assert login is not None
        return await self._in_thread(self._find_run_sync, request, since, login)

    async def get_run(self, repository: str, run_id: str) -> RunInfo:
        return await self._in_thread(self._get_run_sync, repository, run_id)

    async def own_login(self) -> str:
        """Asked once, then remembered: a process keeps its credentials."""
        if self._own_login is None:
            self._own_login = await self._in_thread(self._login_sync)
        return self._own_login

    async def review_protection_rule(
        self, repository: str, run_id: str, environment: str, state: str, comment: str
    ) -> None:
        await self._in_thread(self._review_sync, repository, run_id, environment, state, comment)


@dataclass
class DryRunDispatcher:
    """Dispatches nothing; remembers and shows what it would have sent."""

    dry_run = True
    sent: list[DispatchRequest] = field(default_factory=list)
    echo: Callable[[str], None] | None = None

    async def dispatch(self, request: DispatchRequest) -> RunInfo:
        self.sent.append(request)
        if self.echo:
            self.echo(describe(request, dry_run=True))
        return RunInfo(None, None, "dry-run")

    async def find_run(self, request: DispatchRequest, *, since: datetime) -> RunInfo | None:
        return RunInfo(None, None, "dry-run") if request in self.sent else None

    async def get_run(self, repository: str, run_id: str) -> RunInfo:
        return RunInfo(run_id, None, "dry-run")

    async def own_login(self) -> str | None:
        return None  # no GitHub identity: nothing promobot did not dispatch can be told from what it did

    async def review_protection_rule(
        self, repository: str, run_id: str, environment: str, state: str, comment: str
    ) -> None:
        raise DispatchError(
            "dry run: no GitHub credentials to answer a protection rule", retryable=False, maybe_sent=False
        )
