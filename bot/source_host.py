"""The source host role over GitHub: does a commit exist, and is it reachable from the ref?"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from checks.base import SourceHostError


class GitHubSourceHost:
    def __init__(self, github_factory: Callable[[], Any], timeout: float = 10.0):
        self._github_factory = github_factory
        self._timeout = timeout

    def _reachable_sync(self, repository: str, sha: str, ref: str) -> tuple[bool, str]:
        from github import GithubException
        try:
            comparison = self._github_factory().get_repo(repository).compare(sha, ref)
        except GithubException as exc:
            if exc.status in (404, 422):
                return False, f"commit {sha} does not exist in {repository}"
            raise SourceHostError(f"GitHub answered {exc.status} comparing {sha[:12]}...{ref}") from None
        except Exception as exc:
            raise SourceHostError(f"GitHub could not be reached: {type(exc).__name__}") from None
        # compare(base=sha, head=ref): "ahead" or "identical" means ref contains sha
        if comparison.status in ("ahead", "identical"):
            return True, f"{sha[:12]} is in {ref} ({comparison.ahead_by} commit(s) behind its tip)"
        return False, (f"{sha[:12]} is not reachable from {ref} (status {comparison.status}: "
                       f"{comparison.behind_by} commit(s) not on {ref}); was it built from another branch "
                       "or a force-pushed history?")

    async def commit_reachable(self, repository: str, sha: str, ref: str) -> tuple[bool, str]:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._reachable_sync, repository, sha, ref),
                                          timeout=self._timeout)
        except asyncio.TimeoutError:
            raise SourceHostError(f"GitHub did not answer within {self._timeout:g}s") from None
