"""Local stand-in for Slack's Web API that the real slack_sdk / slack_bolt clients talk to.

Also home of `ThreadedFake`, the background-thread aiohttp server that FakeGitHub shares.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import threading
import time
from typing import Any, Callable

from aiohttp import web

TEAM_ID = "T0TEST"
APP_ID = "A0TEST"
BOT = {"user": "UBOT", "bot_id": "BBOT", "app_id": APP_ID, "team": TEAM_ID}
WORKSPACE_URL = "https://promobot-test.slack.com/"
# fields slack_sdk sends as JSON strings inside form bodies; decoded so recorded params hold real structures
JSON_FIELDS = {"blocks", "attachments", "view", "files", "metadata", "user_auth_blocks"}


def _describe(predicate: Callable) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)


class ThreadedFake:
    """An aiohttp app served on 127.0.0.1:<free port> from its own thread and event loop.

    Its own loop outlives pytest-asyncio's per-test loops, and a bot subprocess can reach it too.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def _make_app(self) -> web.Application:
        raise NotImplementedError

    def _summary(self) -> str:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    async def _listen(self) -> None:
        # short shutdown_timeout: stop() must not wait out a handler sleeping on a deliberate delay
        self._runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        await self._runner.cleanup()
        # handlers still sleeping (dispatch_delay) outlive cleanup; cancel them so the loop closes cleanly
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _check(self, predicate: Callable[[Any], Any]) -> tuple[Any, Exception | None]:
        try:
            return predicate(self), None
        except LookupError as exc:  # e.g. messages()[0] before anything arrived: not there yet
            return None, exc

    def _timeout(self, predicate: Callable, timeout: float, last_error: Exception | None) -> AssertionError:
        error = AssertionError(
            f"{type(self).__name__}: condition not met within {timeout}s: {_describe(predicate)}\n"
            f"recorded so far:\n{self._summary()}"
        )
        error.__cause__ = last_error
        return error

    def wait_for(self, predicate: Callable[[Any], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
        """Block until predicate(self) is truthy and return its value.

        From an async test whose bot runs in-process, use wait_for_async: blocking here would starve the bot.
        """
        deadline = time.monotonic() + timeout
        while True:
            result, error = self._check(predicate)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise self._timeout(predicate, timeout, error)
            time.sleep(interval)

    async def wait_for_async(self, predicate: Callable[[Any], Any], timeout: float = 10.0,
                             interval: float = 0.02) -> Any:
        """wait_for that yields to the caller's event loop while polling."""
        deadline = time.monotonic() + timeout
        while True:
            result, error = self._check(predicate)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise self._timeout(predicate, timeout, error)
            await asyncio.sleep(interval)


async def _read_params(request: web.Request) -> dict[str, Any]:
    # slack_sdk puts some methods' arguments in the query string even on POST, others in a form or JSON body
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        params.update(await request.json())
    elif request.method == "POST":
        form = await request.post()
        params.update({k: v if isinstance(v, str) else v.file.read() for k, v in form.items()})
    for key in JSON_FIELDS & params.keys():
        if isinstance(params[key], str):
            params[key] = json.loads(params[key])
    return params


class FakeSlack(ThreadedFake):
    """Slack Web API at `api_url` (set SLACK_API_URL to it), plus upload and response_url endpoints."""

    def __init__(self, bot_token: str = "xoxb-test-token", usergroups: dict[str, list[str]] | None = None,
                 users: dict[str, dict] | None = None) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.usergroups: dict[str, list[str]] = dict(usergroups or {})
        self.users: dict[str, dict] = dict(users or {})  # users.info overrides, keyed by user id
        self._seq = 0
        self.reset()

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def response_url(self, tag: str = "x") -> str:
        return f"{self.base_url}/response/{tag}"

    # --- test controls and inspection ---

    def reset(self) -> None:
        """Forget recorded traffic and pending failures; keep token, usergroups and users."""
        with self._lock:
            self._calls: list[dict] = []
            self._responses: list[dict] = []
            self._files: list[dict] = []
            self._uploads: dict[str, dict] = {}
            self._failures: list[dict] = []

    def fail_next(self, method: str, error: str = "ratelimited", count: int = 1, status: int = 429,
                  retry_after: int | None = 1) -> None:
        with self._lock:
            self._failures.append(dict(method=method, error=error, count=count, status=status, retry_after=retry_after))

    def calls(self, method: str | None = None) -> list[dict]:
        """Every API call: {method, params, headers (no Authorization), response}."""
        with self._lock:
            return copy.deepcopy([c for c in self._calls if method in (None, c["method"])])

    def responses(self, tag: str | None = None) -> list[dict]:
        """Bodies POSTed to response_url(tag)."""
        with self._lock:
            return copy.deepcopy([r["body"] for r in self._responses if tag in (None, r["tag"])])

    def messages(self, channel: str | None = None) -> list[dict]:
        """Params of successful chat.postMessage calls, each with the "ts" the fake assigned."""
        return self._posted("chat.postMessage", channel)

    def updates(self, channel: str | None = None) -> list[dict]:
        return self._posted("chat.update", channel)

    def files(self) -> list[dict]:
        """Completed uploads: {id, filename, title, channel_id, initial_comment, thread_ts, bytes}."""
        with self._lock:
            return copy.deepcopy(self._files)

    def _posted(self, method: str, channel: str | None) -> list[dict]:
        return [{**c["params"], "ts": c["response"]["ts"]} for c in self.calls(method)
                if c["response"]["ok"] and channel in (None, c["params"]["channel"], c["response"]["channel"])]

    def _summary(self) -> str:
        lines = [f"  {c['method']}({', '.join(f'{k}={str(v)[:60]!r}' for k, v in c['params'].items())})"
                 f" -> {c['response'].get('error', 'ok')}" for c in self.calls()[-20:]]
        return "\n".join(lines) or "  (no calls)"

    # --- HTTP ---

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/response/{tag}", self._response)
        return app

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        form_token = params.pop("token", "")
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth else form_token
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        with self._lock:
            status, extra_headers, body = self._answer(method, params, token)
            call = {"method": method, "params": params, "headers": headers, "response": body}
            self._calls.append(copy.deepcopy(call))
        return web.json_response(body, status=status, headers=extra_headers)

    def _answer(self, method: str, params: dict, token: str) -> tuple[int, dict, dict]:
        if token != self.bot_token:
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        failure = next((f for f in self._failures if f["method"] == method and f["count"] > 0), None)
        if failure:
            failure["count"] -= 1
            rate_limited = failure["status"] == 429 and failure["retry_after"] is not None
            headers = {"Retry-After": str(failure["retry_after"])} if rate_limited else {}
            return failure["status"], headers, {"ok": False, "error": failure["error"]}
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {}, {"ok": False, "error": "unknown_method"}
        result = handler(params)
        return 200, {}, {"ok": "error" not in result, **result}

    async def _upload(self, request: web.Request) -> web.Response:
        data = await request.read()
        with self._lock:
            upload = self._uploads.get(request.match_info["file_id"])
            if upload is None:
                return web.Response(status=404, text="file not found")
            upload["bytes"] = data
        return web.Response(text=f"OK - {len(data)}")

    async def _response(self, request: web.Request) -> web.Response:
        body = await request.json() if request.content_type == "application/json" else dict(await request.post())
        with self._lock:
            self._responses.append({"tag": request.match_info["tag"], "body": body})
        return web.Response(text="ok")

    # --- Web API methods: each returns the response minus "ok"; an "error" key makes it ok: false ---

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _next_ts(self) -> str:
        seconds, micros = divmod(self._next() * 100, 1_000_000)
        return f"{1_700_000_000 + seconds}.{micros:06d}"

    def _message(self, params: dict, ts: str) -> dict:
        keep = {k: params[k] for k in ("blocks", "attachments", "thread_ts", "metadata") if k in params}
        return {"type": "message", **BOT, "text": params.get("text", ""), "ts": ts, **keep}

    def _view(self, view: dict, view_id: str | None = None) -> dict:
        view_id = view_id or f"V{self._next():010d}"
        return {"state": {"values": {}}, "private_metadata": "", "callback_id": "", **view, "id": view_id,
                "team_id": TEAM_ID, "app_id": APP_ID, "bot_id": BOT["bot_id"], "hash": f"1700000000.{self._next()}"}

    @staticmethod
    def _dm(channel: str) -> str:
        # posting to a user id lands in the bot's DM with them
        return "D" + channel if channel[:1] in ("U", "W") else channel

    def _m_auth_test(self, p: dict) -> dict:
        return {"url": WORKSPACE_URL, "team": "Promobot Test", "user": "promobot", "team_id": TEAM_ID,
                "user_id": BOT["user"], "bot_id": BOT["bot_id"], "is_enterprise_install": False}

    def _m_chat_postMessage(self, p: dict) -> dict:
        if not p.get("channel"):
            return {"error": "channel_not_found"}
        if not any(p.get(k) for k in ("text", "blocks", "attachments")):
            return {"error": "no_text"}
        ts = self._next_ts()
        return {"channel": self._dm(p["channel"]), "ts": ts, "message": self._message(p, ts)}

    def _m_chat_update(self, p: dict) -> dict:
        if not p.get("channel") or not p.get("ts"):
            return {"error": "message_not_found"}
        return {"channel": p["channel"], "ts": p["ts"], "text": p.get("text", ""), "message": self._message(p, p["ts"])}

    def _m_chat_postEphemeral(self, p: dict) -> dict:
        if not p.get("channel") or not p.get("user"):
            return {"error": "invalid_arguments"}
        return {"message_ts": self._next_ts()}

    def _m_chat_getPermalink(self, p: dict) -> dict:
        if not p.get("channel") or not p.get("message_ts"):
            return {"error": "invalid_arguments"}
        ts = p["message_ts"].replace(".", "")
        return {"channel": p["channel"], "permalink": f"{WORKSPACE_URL}archives/{p['channel']}/p{ts}"}

    def _m_views_open(self, p: dict) -> dict:
        if not p.get("trigger_id"):
            return {"error": "invalid_trigger_id"}
        return {"view": self._view(p["view"])} if p.get("view") else {"error": "invalid_arguments"}

    def _m_views_update(self, p: dict) -> dict:
        if not p.get("view") or not (p.get("view_id") or p.get("external_id")):
            return {"error": "invalid_arguments"}
        return {"view": self._view(p["view"], p.get("view_id"))}

    def _m_views_publish(self, p: dict) -> dict:
        if not p.get("user_id") or not p.get("view"):
            return {"error": "invalid_arguments"}
        return {"view": self._view(p["view"])}

    def _m_conversations_open(self, p: dict) -> dict:
        if p.get("channel"):
            return {"channel": {"id": p["channel"]}, "no_op": True, "already_open": True}
        if not p.get("users"):
            return {"error": "users_list_not_supplied"}
        return {"channel": {"id": "D" + p["users"].split(",")[0]}, "no_op": False, "already_open": False}

    def _m_usergroups_users_list(self, p: dict) -> dict:
        users = self.usergroups.get(p.get("usergroup", ""))
        return {"error": "no_such_subteam"} if users is None else {"users": list(users)}

    def _m_users_info(self, p: dict) -> dict:
        uid = p.get("user")
        if not uid:
            return {"error": "user_not_found"}
        user = {"id": uid, "team_id": TEAM_ID, "name": f"user_{uid.lower()}", "real_name": f"User {uid}",
                "tz": "UTC", "tz_label": "Coordinated Universal Time", "tz_offset": 0, "is_bot": False,
                "deleted": False, "profile": {"real_name": f"User {uid}", "display_name": f"user_{uid.lower()}"}}
        return {"user": {**user, **self.users.get(uid, {})}}

    def _m_files_getUploadURLExternal(self, p: dict) -> dict:
        if not p.get("filename") or not p.get("length"):
            return {"error": "invalid_arguments"}
        file_id = f"F{self._next():010d}"
        self._uploads[file_id] = {"filename": p["filename"], "bytes": None}
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, p: dict) -> dict:
        wanted = p.get("files") or []
        if not wanted or any(self._uploads.get(f.get("id"), {}).get("bytes") is None for f in wanted):
            return {"error": "file_not_found"}
        done = []
        for f in wanted:
            upload = self._uploads.pop(f["id"])
            done.append({"id": f["id"], "filename": upload["filename"], "title": f.get("title") or upload["filename"],
                         "channel_id": p.get("channel_id"), "initial_comment": p.get("initial_comment"),
                         "thread_ts": p.get("thread_ts"), "bytes": upload["bytes"]})
        self._files.extend(done)
        return {"files": [{"id": f["id"], "name": f["filename"], "title": f["title"], "size": len(f["bytes"])}
                          for f in done]}
