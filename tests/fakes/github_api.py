"""Local stand-in for GitHub's REST API that the real PyGithub talks to (GITHUB_API_URL is its base_url)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import operator
import re
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import jwt
from aiohttp import web

from .slack_api import ThreadedFake

ACTOR = {"login": "promobot", "id": 1, "type": "User"}  # the token's user: runs it dispatches are its own
DEV = {"login": "dev", "id": 2, "type": "User"}
APP_SLUG = "promobot"
APP_BOT = {"login": f"{APP_SLUG}[bot]", "id": 3, "type": "Bot"}  # an installation token acts as the app's bot user
INSTALLATION = web.RequestKey("installation", bool)  # the request came with an installation token
WHO = web.RequestKey("actor", dict)  # the user the request acts as
EPOCH = "2024-01-01T00:00:00Z"
# both spellings a workflow's run-name may use for dispatch inputs
INPUT_EXPR = re.compile(r"\$\{\{\s*(?:github\.event\.)?inputs\.([A-Za-z0-9_-]+)\s*\}\}")
CREATED_OPS = ((">=", operator.ge), ("<=", operator.le), (">", operator.gt), ("<", operator.lt))


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)  # GitHub timestamps have second resolution


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str) -> datetime:
    # an unescaped "+" in a query string arrives as a space
    dt = datetime.fromisoformat(value.strip().replace(" ", "+"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _created_filter(spec: str) -> Callable[[datetime], bool]:
    """GitHub's `created` search qualifier: >=X, >X, <=X, <X, X..Y (either side may be *), or a date."""
    if ".." in spec:
        lo, hi = spec.split("..", 1)
        return lambda dt: (lo in ("", "*") or dt >= _parse_time(lo)) and (hi in ("", "*") or dt <= _parse_time(hi))
    for prefix, op in CREATED_OPS:
        if spec.startswith(prefix):
            bound = _parse_time(spec[len(prefix) :])
            return lambda dt: op(dt, bound)
    day = _parse_time(spec).date()
    return lambda dt: dt.date() == day


def _render(template: str, inputs: dict) -> str:
    # GitHub renders booleans/numbers the JSON way and missing inputs as ""
    def value(match: re.Match) -> str:
        v = inputs.get(match.group(1), "")
        return v if isinstance(v, str) else json.dumps(v)

    return INPUT_EXPR.sub(value, template)


def _error(status: int, message: str, headers: dict | None = None) -> web.Response:
    body = {"message": message, "documentation_url": "https://docs.github.com/rest", "status": str(status)}
    return web.json_response(body, status=status, headers=headers)


class FakeGitHub(ThreadedFake):
    """GitHub REST API at `api_url`: repos, workflows + dispatch + runs, compare/commits, GitHub App tokens."""

    def __init__(self, token: str = "ghp_test", installation_id: int = 1) -> None:
        super().__init__()
        self.token = token
        self.installation_id = installation_id
        self.ghes_no_run_details = False  # True: dispatch answers 204 without run details, like older GHES
        self.dispatch_delay = 0.0  # seconds to sleep after recording a dispatch, before answering it
        self.listing_lag = 0.0  # seconds a new run stays out of the runs lists (GitHub lists runs a moment late)
        self.path_with_ref = False  # True: runs name their workflow "<path>@<branch>", as GitHub does for some
        self._repos: dict[str, dict] = {}
        self._issued: set[str] = set()  # installation tokens handed out; they survive reset()
        self._next_id = 10_000_000
        self._reset_at = int(time.time()) + 3600
        self.reset()

    @property
    def api_url(self) -> str:
        return self.base_url

    # --- setup ---

    def add_repo(self, full_name: str, default_branch: str = "main") -> None:
        with self._lock:
            self._repos[full_name.lower()] = {
                "full_name": full_name,
                "id": self._new_id(),
                "default_branch": default_branch,
                "branches": {default_branch: []},
                "commits": {},
                "workflows": {},
            }

    def add_workflow(
        self,
        repo: str,
        file: str,
        workflow_id: int | None = None,
        run_name: str | None = None,
        name: str | None = None,
        inputs: Iterable[str] | None = None,
    ) -> int:
        """Register .github/workflows/<file>; `inputs` (declared input names) makes dispatch reject others."""
        with self._lock:
            wf = {
                "id": workflow_id or self._new_id(),
                "file": file,
                "name": name or file.rsplit(".", 1)[0],
                "run_name": run_name,
                "inputs": None if inputs is None else set(inputs),
                "runs": 0,
            }
            self._repo(repo)["workflows"][file] = wf
            return wf["id"]

    def add_commits(
        self,
        repo: str,
        ref: str = "main",
        shas: Iterable[str] = (),
        messages: Iterable[str] | None = None,
        dates: Iterable[datetime] | None = None,
    ) -> None:
        """Append commits (oldest first) to branch `ref`; a sha already known elsewhere is shared history.
        ``dates`` are the commits' author and committer dates (default: now)."""
        shas = list(shas)
        messages = list(messages) if messages is not None else [f"Commit {sha[:7]}" for sha in shas]
        when = list(dates) if dates is not None else [_now() for _ in shas]
        with self._lock:
            r = self._repo(repo)
            history = r["branches"].setdefault(ref, [])
            for sha, message, date in zip(shas, messages, when, strict=True):
                r["commits"].setdefault(
                    sha,
                    {"sha": sha, "message": message, "date": _iso(date), "parent": history[-1] if history else None},
                )
                history.append(sha)

    # --- test controls and inspection ---

    def reset(self) -> None:
        """Forget dispatches, runs, recorded requests and pending failures; keep repos, workflows, commits."""
        with self._lock:
            self._runs: dict[int, dict] = {}
            self._dispatches: list[dict] = []
            self._requests: list[dict] = []
            self._failures: list[dict] = []
            self._delays: list[dict] = []
            self._accept_then_fail = 0
            self.listing_lag = 0.0
            self._reviews: list[dict] = []

    def clear_failures(self) -> None:
        """GitHub recovers: injected failures and delays stop (recorded requests and runs stay)."""
        with self._lock:
            self._failures.clear()
            self._delays.clear()

    def accept_then_fail(self, count: int = 1) -> None:
        """The next ``count`` dispatches start their run, then GitHub answers 502 (a lost answer)."""
        with self._lock:
            self._accept_then_fail = count

    def delay_next(self, seconds: float, path_contains: str, count: int = 1) -> None:
        """Answer the next ``count`` matching requests only after ``seconds`` (a slow GitHub)."""
        with self._lock:
            self._delays.append({"seconds": seconds, "path_contains": path_contains, "count": count})

    def fail_next(
        self,
        count: int = 1,
        status: int = 502,
        path_contains: str | None = None,
        retry_after: int | None = None,
        rate_limit_reset: int | None = None,
    ) -> None:
        """Fail the next `count` matching requests; rate_limit_reset (epoch s) sends X-RateLimit-Remaining: 0."""
        with self._lock:
            self._failures.append(
                dict(
                    count=count,
                    status=status,
                    path_contains=path_contains,
                    retry_after=retry_after,
                    rate_limit_reset=rate_limit_reset,
                )
            )

    def create_run(
        self,
        repo: str,
        workflow_file: str,
        *,
        event: str = "workflow_dispatch",
        actor: dict | None = None,
        display_title: str | None = None,
        branch: str = "main",
        inputs: dict | None = None,
    ) -> int:
        """A run started by someone other than promobot ("by hand"): another actor, event or workflow
        (an unknown workflow file is registered first). Returns its id."""
        with self._lock:
            r = self._repo(repo)
            wf = r["workflows"].get(workflow_file)
            if wf is None:
                wf = {"id": self._new_id(), "file": workflow_file, "name": workflow_file.rsplit(".", 1)[0]}
                wf.update(run_name=None, inputs=None, runs=0)
                r["workflows"][workflow_file] = wf
            r["branches"].setdefault(branch, [])
            run = self._create_run(r, wf, branch, inputs or {}, event=event, actor=actor or DEV)
            if display_title is not None:
                run["display_title"] = display_title
            return run["id"]

    def rerun(self, run_id: int, actor: dict | None = None) -> None:
        """Re-run a run: the same id, the next attempt, started by ``actor`` (actor stays who ran it first)."""
        with self._lock:
            run = self._runs[run_id]
            run.update(
                run_attempt=run["run_attempt"] + 1,
                triggering_actor=actor or DEV,
                status="queued",
                conclusion=None,
                updated_at=_now(),
            )

    def protection_rule_reviews(self, repo: str | None = None) -> list[dict]:
        """{repo, run_id, environment_name, state, comment, at} per accepted review of a custom
        deployment protection rule (POST …/actions/runs/{run_id}/deployment_protection_rule)."""
        with self._lock:
            return copy.deepcopy([r for r in self._reviews if repo is None or r["repo"].lower() == repo.lower()])

    def start_run(self, run_id: int) -> None:
        self._set_run(run_id, status="in_progress")

    def complete_run(self, run_id: int, conclusion: str = "success") -> None:
        self._set_run(run_id, status="completed", conclusion=conclusion)

    def dispatches(self, repo: str | None = None) -> list[dict]:
        """{repo, workflow (file name), ref, inputs, return_run_details, run_id, at} per accepted dispatch."""
        with self._lock:
            return copy.deepcopy([d for d in self._dispatches if repo is None or d["repo"].lower() == repo.lower()])

    def runs(self, repo: str | None = None) -> list[dict]:
        """Runs as the API serves them, newest first."""
        with self._lock:
            return copy.deepcopy([self._run_json(run) for run in self._sorted_runs(repo)])

    def requests(self) -> list[dict]:
        """{method, path, query, status, at (epoch seconds)} for every request, in arrival order."""
        with self._lock:
            return copy.deepcopy(self._requests)

    def _summary(self) -> str:
        lines = [f"  {r['method']} {r['path']} {r['query'] or ''} -> {r['status']}" for r in self.requests()[-20:]]
        return "\n".join(lines) or "  (no requests)"

    # --- state helpers (call with the lock held) ---

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _repo(self, full_name: str) -> dict:
        return self._repos[full_name.lower()]

    def _set_run(self, run_id: int, **changes: Any) -> None:
        with self._lock:
            self._runs[run_id].update(changes, updated_at=_now())

    def _sorted_runs(self, repo: str | None, workflow: dict | None = None) -> list[dict]:
        runs = [
            run
            for run in self._runs.values()
            if (repo is None or run["repo"] == repo.lower()) and (workflow is None or run["workflow"] is workflow)
        ]
        return sorted(runs, key=lambda run: (run["created_at"], run["id"]), reverse=True)

    def _resolve(self, r: dict, ref: str) -> str | None:
        """Branch name, full sha or an unambiguous 7+ character prefix -> sha."""
        ref = ref.removeprefix("refs/heads/")
        if r["branches"].get(ref):
            return r["branches"][ref][-1]
        if ref in r["commits"]:
            return ref
        matches = [sha for sha in r["commits"] if sha.startswith(ref)] if len(ref) >= 7 else []
        return matches[0] if len(matches) == 1 else None

    def _ancestry(self, r: dict, sha: str) -> list[str]:
        line = []
        while sha:
            line.append(sha)
            sha = r["commits"][sha]["parent"]
        return line

    # --- JSON shapes (field names as PyGithub's classes read them) ---

    def _repo_url(self, r: dict) -> str:
        return f"{self.api_url}/repos/{r['full_name']}"

    def _repo_json(self, r: dict) -> dict:
        owner, name = r["full_name"].split("/")
        url = self._repo_url(r)
        return {
            "id": r["id"],
            "node_id": f"R_{r['id']}",
            "name": name,
            "full_name": r["full_name"],
            "owner": {
                "login": owner,
                "type": "Organization",
                "url": f"{self.api_url}/users/{owner}",
                "html_url": f"https://github.com/{owner}",
            },
            "private": True,
            "visibility": "private",
            "fork": False,
            "archived": False,
            "disabled": False,
            "html_url": f"https://github.com/{r['full_name']}",
            "url": url,
            "default_branch": r["default_branch"],
            "compare_url": f"{url}/compare/{{base}}...{{head}}",
            "commits_url": f"{url}/commits{{/sha}}",
            "created_at": EPOCH,
            "updated_at": EPOCH,
            "pushed_at": EPOCH,
            "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
        }

    def _workflow_json(self, r: dict, wf: dict) -> dict:
        path = f".github/workflows/{wf['file']}"
        html = f"https://github.com/{r['full_name']}"
        return {
            "id": wf["id"],
            "node_id": f"W_{wf['id']}",
            "name": wf["name"],
            "path": path,
            "state": "active",
            "created_at": EPOCH,
            "updated_at": EPOCH,
            "url": f"{self._repo_url(r)}/actions/workflows/{wf['id']}",
            "html_url": f"{html}/blob/{r['default_branch']}/{path}",
            "badge_url": f"{html}/workflows/{wf['name']}/badge.svg",
        }

    def _commit_json(self, r: dict, sha: str) -> dict:
        c = r["commits"][sha]
        url, html = f"{self._repo_url(r)}/commits", f"https://github.com/{r['full_name']}/commit"
        person = {"name": "Dev Eloper", "email": "dev@example.com", "date": c["date"]}
        return {
            "sha": sha,
            "node_id": f"C_{sha}",
            "url": f"{url}/{sha}",
            "html_url": f"{html}/{sha}",
            "commit": {
                "message": c["message"],
                "author": person,
                "committer": person,
                "comment_count": 0,
                "url": f"{self._repo_url(r)}/git/commits/{sha}",
            },
            "author": DEV,
            "committer": DEV,
            "parents": [{"sha": p, "url": f"{url}/{p}", "html_url": f"{html}/{p}"} for p in [c["parent"]] if p],
        }

    def _run_json(self, run: dict) -> dict:
        r, wf = self._repos[run["repo"]], run["workflow"]
        url = f"{self._repo_url(r)}/actions/runs/{run['id']}"
        commit = r["commits"].get(run["head_sha"], {"message": "", "date": EPOCH})
        person = {"name": "Dev Eloper", "email": "dev@example.com"}
        # "name" is the workflow's name; the rendered run-name is only in "display_title", as on GitHub
        return {
            "id": run["id"],
            "name": wf["name"],
            "node_id": f"WFR_{run['id']}",
            "display_title": run["display_title"],
            "head_branch": run["head_branch"],
            "head_sha": run["head_sha"],
            "path": f".github/workflows/{wf['file']}" + (f"@{run['head_branch']}" if self.path_with_ref else ""),
            "run_number": run["run_number"],
            "run_attempt": run["run_attempt"],
            "event": run["event"],
            "status": run["status"],
            "conclusion": run["conclusion"],
            "workflow_id": wf["id"],
            "url": url,
            "html_url": f"https://github.com/{r['full_name']}/actions/runs/{run['id']}",
            "pull_requests": [],
            "created_at": _iso(run["created_at"]),
            "updated_at": _iso(run["updated_at"]),
            "run_started_at": _iso(run["created_at"]),
            "actor": run["actor"],
            "triggering_actor": run["triggering_actor"],
            "jobs_url": f"{url}/jobs",
            "logs_url": f"{url}/logs",
            "artifacts_url": f"{url}/artifacts",
            "cancel_url": f"{url}/cancel",
            "rerun_url": f"{url}/rerun",
            "previous_attempt_url": None,
            "workflow_url": f"{self._repo_url(r)}/actions/workflows/{wf['id']}",
            "head_commit": {
                "id": run["head_sha"],
                "message": commit["message"],
                "timestamp": commit["date"],
                "author": person,
                "committer": person,
            },
            "repository": self._repo_json(r),
            "head_repository": self._repo_json(r),
        }

    def _paginate(self, request: web.Request, items: list, default_per_page: int = 30) -> tuple[list, dict]:
        """Slice by page/per_page and build GitHub's Link header (absent when there is one page)."""
        per_page = min(int(request.query.get("per_page", default_per_page)), 100 if default_per_page <= 100 else 1000)
        page = max(int(request.query.get("page", 1)), 1)
        last = max(1, -(-len(items) // per_page))
        rels = ([("prev", page - 1), ("first", 1)] if page > 1 else []) + (
            [("next", page + 1), ("last", last)] if page < last else []
        )
        links = [
            f'<{self.api_url}{request.rel_url.update_query(page=n, per_page=per_page)}>; rel="{rel}"' for rel, n in rels
        ]
        return items[(page - 1) * per_page : page * per_page], ({"Link": ", ".join(links)} if links else {})

    # --- HTTP ---

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        add = app.router.add_route
        repo = "/repos/{owner}/{repo}"
        add("GET", repo, self._get_repo)
        add("GET", repo + "/actions/workflows/{workflow}", self._get_workflow)
        add("POST", repo + "/actions/workflows/{workflow}/dispatches", self._dispatch)
        add("GET", repo + "/actions/workflows/{workflow}/runs", self._list_runs)
        add("GET", repo + "/actions/runs", self._list_runs)
        add("GET", repo + "/actions/runs/{run_id:\\d+}", self._get_run)
        add("POST", repo + "/actions/runs/{run_id:\\d+}/deployment_protection_rule", self._review_protection_rule)
        add("GET", repo + "/compare/{basehead:.+}", self._compare)
        add("GET", repo + "/commits/{ref:.+}", self._get_commit)
        add("GET", repo + "/installation", self._installation)
        add("GET", "/user", self._user)
        add("GET", "/app", self._app)
        add("GET", "/app/installations/{installation_id}", self._installation)
        add("POST", "/app/installations/{installation_id}/access_tokens", self._access_token)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        with self._lock:
            delay = next((d for d in self._delays if d["count"] > 0 and d["path_contains"] in request.path_qs), None)
            if delay is not None:
                delay["count"] -= 1
        if delay is not None:
            await asyncio.sleep(delay["seconds"])
        try:
            response = self._gate(request) or await handler(request)
        except web.HTTPException as exc:  # unrouted paths and methods, answered in GitHub's JSON shape
            response = _error(exc.status, exc.reason)
        with self._lock:
            self._requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": dict(request.query),
                    "status": response.status,
                    "at": time.time(),
                }
            )
            used = len(self._requests)
        rate = {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": str(max(5000 - used, 0)),
            "X-RateLimit-Reset": str(self._reset_at),
            "X-RateLimit-Used": str(used),
            "X-RateLimit-Resource": "core",
        }
        for key, value in rate.items():
            response.headers.setdefault(key, value)  # an injected rate-limit failure keeps its own values
        return response

    def _gate(self, request: web.Request) -> web.Response | None:
        """Authentication, then injected failures; None lets the request through."""
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if request.path == "/app" or request.path.startswith("/app/") or request.path.endswith("/installation"):
            if scheme.lower() != "bearer" or not self._is_app_jwt(credential):
                return _error(401, "A JSON web token could not be decoded")
        elif scheme.lower() not in ("token", "bearer") or not (credential == self.token or credential in self._issued):
            return _error(401, "Bad credentials")
        else:  # who acts: the token's user, or the app's bot user for an installation token
            request[INSTALLATION] = credential in self._issued
            request[WHO] = APP_BOT if request[INSTALLATION] else ACTOR
        with self._lock:
            failure = next(
                (
                    f
                    for f in self._failures
                    if f["count"] > 0 and (f["path_contains"] is None or f["path_contains"] in request.path_qs)
                ),
                None,
            )
            if failure is None:
                return None
            failure["count"] -= 1
        headers = {}
        if failure["retry_after"] is not None:
            headers["Retry-After"] = str(failure["retry_after"])
        if failure["rate_limit_reset"] is not None:
            headers.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(failure["rate_limit_reset"]))})
            return _error(failure["status"], "API rate limit exceeded for installation ID 1.", headers)
        if failure["status"] in (403, 429):
            return _error(
                failure["status"],
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                headers,
            )
        return _error(failure["status"], HTTPStatus(failure["status"]).phrase, headers)

    @staticmethod
    def _is_app_jwt(credential: str) -> bool:
        try:  # the fake has no app public key, so it checks shape and claims only
            return "iss" in jwt.decode(credential, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return False

    def _find(self, request: web.Request) -> tuple[dict | None, dict | None]:
        """(repo, workflow) named by the path; workflow is matched by numeric id or file name."""
        r = self._repos.get(f"{request.match_info['owner']}/{request.match_info['repo']}".lower())
        key = request.match_info.get("workflow")
        if r is None or key is None:
            return r, None
        return r, next((wf for wf in r["workflows"].values() if key in (str(wf["id"]), wf["file"])), None)

    async def _get_repo(self, request: web.Request) -> web.Response:
        with self._lock:
            r, _ = self._find(request)
            return web.json_response(self._repo_json(r)) if r else _error(404, "Not Found")

    async def _get_workflow(self, request: web.Request) -> web.Response:
        with self._lock:
            r, wf = self._find(request)
            return web.json_response(self._workflow_json(r, wf)) if wf else _error(404, "Not Found")

    async def _dispatch(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Problems parsing JSON")
        with self._lock:
            r, wf = self._find(request)
            if wf is None:
                return _error(404, "Not Found")
            ref, inputs = body.get("ref"), body.get("inputs") or {}
            if not isinstance(ref, str):
                return _error(422, "Invalid request.\n\nFor 'properties/ref', nil is not a string.")
            branch = ref.removeprefix("refs/heads/")
            if branch not in r["branches"]:
                return _error(422, f"No ref found for: {ref}")
            if wf["inputs"] is not None and (unexpected := sorted(set(inputs) - wf["inputs"])):
                return _error(422, f"Unexpected inputs provided: {json.dumps(unexpected)}")
            run = self._create_run(r, wf, branch, inputs, actor=request[WHO])
            self._dispatches.append(
                {
                    "repo": r["full_name"],
                    "workflow": wf["file"],
                    "ref": ref,
                    "inputs": inputs,
                    "return_run_details": body.get("return_run_details", False),
                    "run_id": run["id"],
                    "at": datetime.now(UTC),
                }
            )
            details = body.get("return_run_details") is True and not self.ghes_no_run_details
            run_json, delay = self._run_json(run), self.dispatch_delay
            lost = self._accept_then_fail > 0
            self._accept_then_fail -= lost
        if delay:
            await asyncio.sleep(delay)
        if lost:  # the run started; the answer that says so is lost
            return _error(502, "Bad Gateway")
        if not details:
            return web.Response(status=204)
        return web.json_response(
            {"workflow_run_id": run["id"], "run_url": run_json["url"], "html_url": run_json["html_url"]}
        )

    def _create_run(
        self, r: dict, wf: dict, branch: str, inputs: dict, *, event: str = "workflow_dispatch", actor: dict
    ) -> dict:
        wf["runs"] += 1
        # a branch with no commits registered still needs a stable head sha
        head_sha = (r["branches"][branch] or [hashlib.sha1(f"{r['full_name']}@{branch}".encode()).hexdigest()])[-1]
        now = _now()
        run = {
            "id": self._new_id(),
            "repo": r["full_name"].lower(),
            "workflow": wf,
            "run_number": wf["runs"],
            "head_branch": branch,
            "head_sha": head_sha,
            "event": event,
            "actor": actor,
            "triggering_actor": actor,
            "run_attempt": 1,
            "status": "queued",
            "conclusion": None,
            "created_at": now,
            "updated_at": now,
            "display_title": _render(wf["run_name"], inputs) if wf["run_name"] else wf["name"],
        }
        self._runs[run["id"]] = run
        return run

    async def _list_runs(self, request: web.Request) -> web.Response:
        q = request.query
        with self._lock:
            r, wf = self._find(request)
            if r is None or ("workflow" in request.match_info and wf is None):
                return _error(404, "Not Found")
            listed_before = _now() - timedelta(seconds=self.listing_lag)
            runs = [run for run in self._sorted_runs(r["full_name"], wf) if run["created_at"] <= listed_before]
            created = _created_filter(q["created"]) if "created" in q else None
            runs = [
                run
                for run in runs
                if q.get("event", run["event"]) == run["event"]
                and q.get("branch", run["head_branch"]) == run["head_branch"]
                and q.get("head_sha", run["head_sha"]) == run["head_sha"]
                and q.get("actor", run["actor"]["login"]) == run["actor"]["login"]
                and ("status" not in q or q["status"] in (run["status"], run["conclusion"]))
                and (created is None or created(run["created_at"]))
            ]
            page, headers = self._paginate(request, runs)
            body = {"total_count": len(runs), "workflow_runs": [self._run_json(run) for run in page]}
        return web.json_response(body, headers=headers)

    async def _get_run(self, request: web.Request) -> web.Response:
        with self._lock:
            r, _ = self._find(request)
            run = self._runs.get(int(request.match_info["run_id"]))
            if r is None or run is None or run["repo"] != r["full_name"].lower():
                return _error(404, "Not Found")
            return web.json_response(self._run_json(run))

    async def _review_protection_rule(self, request: web.Request) -> web.Response:
        """Review custom deployment protection rules for a workflow run: installation tokens only (a GitHub App
        reviews its own rule), body {environment_name, state approved|rejected, comment}; 204."""
        if not request.get(INSTALLATION):
            return _error(403, "Resource not accessible by personal access token")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Problems parsing JSON")
        env, state, comment = body.get("environment_name"), body.get("state"), body.get("comment")
        if not isinstance(env, str) or not env:
            return _error(422, 'Invalid request.\n\nNo subschema in "anyOf" matched.')
        if state is not None and state not in ("approved", "rejected"):
            return _error(422, f'Invalid request.\n\n{json.dumps(state)} is not a member of ["approved", "rejected"].')
        if comment is not None and (not isinstance(comment, str) or len(comment) > 1024):
            return _error(422, "Invalid request.\n\ncomment is too long (maximum is 1024 characters).")
        with self._lock:
            r, _ = self._find(request)
            run = self._runs.get(int(request.match_info["run_id"]))
            if r is None or run is None or run["repo"] != r["full_name"].lower():
                return _error(404, "Not Found")
            self._reviews.append(
                {
                    "repo": r["full_name"],
                    "run_id": run["id"],
                    "environment_name": env,
                    "state": state,
                    "comment": comment,
                    "at": datetime.now(UTC),
                }
            )
        return web.Response(status=204)

    async def _user(self, request: web.Request) -> web.Response:
        """The authenticated user; an installation token is not a user (GitHub answers 403)."""
        if request.get(INSTALLATION):
            return _error(403, "Resource not accessible by integration")
        return web.json_response({**ACTOR, "node_id": "U_1", "url": f"{self.api_url}/users/{ACTOR['login']}"})

    async def _app(self, request: web.Request) -> web.Response:
        """The authenticated GitHub App (JWT): its slug names its bot user, ``<slug>[bot]``."""
        claims = jwt.decode(request.headers["Authorization"].partition(" ")[2], options={"verify_signature": False})
        app_id = str(claims["iss"])
        return web.json_response(
            {
                "id": int(app_id) if app_id.isdigit() else 1,
                "slug": APP_SLUG,
                "node_id": "A_1",
                "name": "promobot",
                "owner": {"login": "acme", "type": "Organization"},
                "description": "",
                "external_url": "https://promobot.example.com",
                "html_url": f"https://github.com/apps/{APP_SLUG}",
                "created_at": EPOCH,
                "updated_at": EPOCH,
                "permissions": {"actions": "write", "contents": "read", "deployments": "write", "metadata": "read"},
                "events": ["deployment_protection_rule", "workflow_run"],
            }
        )

    async def _compare(self, request: web.Request) -> web.Response:
        basehead = request.match_info["basehead"]
        base, sep, head = basehead.partition("...")
        with self._lock:
            r, _ = self._find(request)
            base_sha, head_sha = (self._resolve(r, base), self._resolve(r, head)) if r and sep else (None, None)
            if base_sha is None or head_sha is None:
                return _error(404, "Not Found")
            base_line, head_line = self._ancestry(r, base_sha), self._ancestry(r, head_sha)
            merge_base = next((sha for sha in head_line if sha in set(base_line)), None)
            if merge_base is None:
                return _error(404, f"No common ancestor between {base} and {head}.")
            ahead = head_line[: head_line.index(merge_base)][::-1]  # oldest first, like GitHub
            behind_by = base_line.index(merge_base)
            status = (
                "identical"
                if not ahead and not behind_by
                else "ahead"
                if not behind_by
                else "behind"
                if not ahead
                else "diverged"
            )
            page, headers = self._paginate(request, ahead, default_per_page=250)
            html = f"https://github.com/{r['full_name']}/compare/{basehead}"
            body = {
                "url": f"{self._repo_url(r)}/compare/{basehead}",
                "html_url": html,
                "permalink_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "base_commit": self._commit_json(r, base_sha),
                "merge_base_commit": self._commit_json(r, merge_base),
                "status": status,
                "ahead_by": len(ahead),
                "behind_by": behind_by,
                "total_commits": len(ahead),
                "commits": [self._commit_json(r, sha) for sha in page],
                "files": [],
            }
        return web.json_response(body, headers=headers)

    async def _get_commit(self, request: web.Request) -> web.Response:
        with self._lock:
            r, _ = self._find(request)
            if r is None:
                return _error(404, "Not Found")
            sha = self._resolve(r, request.match_info["ref"])
            if sha is None:
                return _error(422, f"No commit found for SHA: {request.match_info['ref']}")
            body = {**self._commit_json(r, sha), "stats": {"total": 0, "additions": 0, "deletions": 0}, "files": []}
        return web.json_response(body)

    async def _installation(self, request: web.Request) -> web.Response:
        with self._lock:
            if "owner" in request.match_info:
                r, _ = self._find(request)
                if r is None:
                    return _error(404, "Not Found")
                account = r["full_name"].split("/")[0]
            elif request.match_info["installation_id"] != str(self.installation_id):
                return _error(404, "Not Found")
            else:
                account = "test-org"
        claims = jwt.decode(request.headers["Authorization"].partition(" ")[2], options={"verify_signature": False})
        app_id = str(claims["iss"])
        return web.json_response(
            {
                "id": self.installation_id,
                "app_id": int(app_id) if app_id.isdigit() else app_id,
                "app_slug": "promobot",
                "target_type": "Organization",
                "account": {"login": account, "type": "Organization"},
                "access_tokens_url": f"{self.api_url}/app/installations/{self.installation_id}/access_tokens",
                "repositories_url": f"{self.api_url}/installation/repositories",
                "repository_selection": "all",
                "permissions": {"actions": "write", "contents": "read", "deployments": "write", "metadata": "read"},
                "events": [],
                "created_at": EPOCH,
                "updated_at": EPOCH,
            }
        )

    async def _access_token(self, request: web.Request) -> web.Response:
        if request.match_info["installation_id"] != str(self.installation_id):
            return _error(404, "Not Found")
        token = "ghs_" + secrets.token_hex(18)
        with self._lock:
            self._issued.add(token)
        return web.json_response(
            {
                "token": token,
                "expires_at": _iso(_now() + timedelta(hours=1)),
                "permissions": {"actions": "write", "contents": "read", "deployments": "write", "metadata": "read"},
                "repository_selection": "all",
            },
            status=201,
        )
