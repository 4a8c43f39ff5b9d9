"""The source host role over GitHub: does a commit exist, is it reachable from the ref, when was it
committed, and what changed between two commits (the source history an approval card shows)?"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from github import GithubException

from bot.engine.roles import SourceChanges, SourceCommit
from checks.base import SourceHostError


class GitHubSourceHost:
    def __init__(self, github_factory: Callable[[], Any], timeout: float = 10.0):
        self._make_github = github_factory
        self._timeout = timeout
        self._local = threading.local()  # one client per worker thread: PyGithub is not thread-safe to share
        # two commit shas always compare the same, and a commit's time never changes: remember the answers,
        # so card redraws and repeated checks cost no request (whether a commit is reachable is always asked)
        self._changes: OrderedDict[tuple[str, str, str], SourceChanges] = OrderedDict()
        self._times: OrderedDict[tuple[str, str], datetime] = OrderedDict()

    def _github_factory(self) -> Any:
        """This thread's GitHub client, kept so that its connection to GitHub is too."""
        client = getattr(self._local, "github", None)
        if client is None:
            client = self._local.github = self._make_github()
        return client

    def _reachable_sync(self, repository: str, sha: str, ref: str) -> tuple[bool, str]:
        try:
            # a lazy client asks when an attribute is first read: read them all here
            comparison = self._github_factory().get_repo(repository).compare(sha, ref)
            status, ahead_by, behind_by = comparison.status, comparison.ahead_by, comparison.behind_by
        except GithubException as exc:
            if exc.status in (404, 422):
                return False, f"commit {sha} does not exist in {repository}"
            raise SourceHostError(f"GitHub answered {exc.status} comparing {sha[:12]}...{ref}") from None
        except Exception as exc:
            raise SourceHostError(f"GitHub could not be reached: {type(exc).__name__}") from None
        # compare(base=sha, head=ref): "ahead" or "identical" means ref contains sha
        if status in ("ahead", "identical"):
            return True, f"{sha[:12]} is in {ref} ({ahead_by} commit(s) behind its tip)"
        return False, (
            f"{sha[:12]} is not reachable from {ref} (status {status}: "
            f"{behind_by} commit(s) not on {ref}); was it built from another branch "
            "or a force-pushed history?"
        )

    async def commit_reachable(self, repository: str, sha: str, ref: str) -> tuple[bool, str]:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._reachable_sync, repository, sha, ref), timeout=self._timeout
            )
        except TimeoutError:
            raise SourceHostError(f"GitHub did not answer within {self._timeout:g}s") from None

    def _commit_time_sync(self, repository: str, sha: str) -> datetime | None:
        try:
            commit = self._github_factory().get_repo(repository).get_commit(sha)
            committer = commit.commit.committer
        except GithubException as exc:
            if exc.status in (404, 422):
                return None
            raise SourceHostError(f"GitHub answered {exc.status} for commit {sha[:12]}") from None
        except Exception as exc:
            raise SourceHostError(f"GitHub could not be reached: {type(exc).__name__}") from None
        when = committer.date if committer is not None else None
        return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when

    async def commit_time(self, repository: str, sha: str) -> datetime | None:
        """The commit's committer date (git's %ct, what SOURCE_DATE_EPOCH builds stamp), or None."""
        key = (repository, sha)
        if key in self._times:
            return self._times[key]
        try:
            when = await asyncio.wait_for(
                asyncio.to_thread(self._commit_time_sync, repository, sha), timeout=self._timeout
            )
        except TimeoutError:
            raise SourceHostError(f"GitHub did not answer within {self._timeout:g}s") from None
        if when is not None:  # a commit not found yet may be pushed later: only an answer is kept
            _remember(self._times, key, when)
        return when

    def _changes_sync(self, repository: str, base_sha: str, head_sha: str) -> SourceChanges:
        try:
            comparison = self._github_factory().get_repo(repository).compare(base_sha, head_sha)
            body = comparison.raw_data
        except GithubException as exc:
            raise SourceHostError(f"GitHub answered {exc.status} comparing {base_sha[:12]}...{head_sha[:12]}") from None
        except Exception as exc:
            raise SourceHostError(f"GitHub could not be reached: {type(exc).__name__}") from None
        return changes_from_compare(body, base_sha, head_sha)

    async def commits_between(self, repository: str, base_sha: str, head_sha: str) -> SourceChanges:
        """Commits in ``head_sha`` and not in ``base_sha``, newest first (at most MAX_COMMITS), with the total."""
        key = (repository, base_sha, head_sha)
        if key in self._changes:
            return self._changes[key]
        try:
            changes = await asyncio.wait_for(
                asyncio.to_thread(self._changes_sync, repository, base_sha, head_sha), timeout=self._timeout
            )
        except TimeoutError:
            raise SourceHostError(f"GitHub did not answer within {self._timeout:g}s") from None
        _remember(self._changes, key, changes)
        return changes


_REMEMBERING = threading.Lock()  # the gates ask from threads of their own


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any, size: int = 256) -> None:
    with _REMEMBERING:
        cache[key] = value
        while len(cache) > size:
            cache.popitem(last=False)


PULL_REQUEST = (re.compile(r"^Merge pull request #(\d+)"), re.compile(r"\(#(\d+)\)\s*$"))
MAX_COMMITS = 20  # the card shows a handful; the compare link has the rest


def summarize_commit(sha: str, message: str, author: str) -> SourceCommit:
    """One commit as a card line: its title and the pull request it came from ("(#123)" or a merge)."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    title = lines[0] if lines else sha[:7]
    number = None
    for pattern in PULL_REQUEST:
        m = pattern.search(title)
        if m:
            number = int(m[1])
            break
    if title.startswith("Merge pull request #") and len(lines) > 1:
        title = lines[1]  # a merge commit's body is the pull request's title
    return SourceCommit(sha=sha, title=title, author=author, pull_request=number)


def changes_from_compare(body: dict, base_sha: str, head_sha: str, limit: int = MAX_COMMITS) -> SourceChanges:
    """A GitHub compare response (its first page) → the newest ``limit`` commits and the total."""
    commits = body.get("commits") or []
    newest = [
        summarize_commit(
            c["sha"],
            (c.get("commit") or {}).get("message", ""),
            (c.get("author") or {}).get("login")
            or ((c.get("commit") or {}).get("author") or {}).get("name")
            or "unknown",
        )
        for c in reversed(commits[-limit:])
    ]
    html = body.get("html_url")
    return SourceChanges(
        base_sha=base_sha,
        head_sha=head_sha,
        commits=tuple(newest),
        total=int(body.get("total_commits", len(commits))),
        compare_url=html,
        repository_url=html.split("/compare/")[0] if html and "/compare/" in html else None,
    )
