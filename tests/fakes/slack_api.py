"""Local stand-in for Slack's Web API that the real slack_sdk / slack_bolt clients talk to.

It also speaks Socket Mode the way Slack does: `apps.connections.open` (app-level `xapp-` token) hands out a
one-time websocket URL; the websocket greets with `hello`, carries envelopes a test pushes
(`socket_send`), records the client's acks (`socket_acks`) and answers its pings.

Also home of `ThreadedFake`, the background-thread aiohttp server that FakeGitHub shares.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSCloseCode, WSMsgType, web

TEAM_ID = "T0TEST"
APP_ID = "A0TEST"
BOT = {"user": "UBOT", "bot_id": "BBOT", "app_id": APP_ID, "team": TEAM_ID}
WORKSPACE_URL = "https://promobot-test.slack.com/"
# fields slack_sdk sends as JSON strings inside form bodies; decoded so recorded params hold real structures
JSON_FIELDS = {"blocks", "attachments", "view", "files", "metadata", "user_auth_blocks"}
APP_TOKEN = "xapp-1-A0TEST-1-fake0socket0mode"
SOCKET_HOST = "applink-fake-0"  # debug_info.host in hello / disconnect, as Slack names its link servers
# interactive payloads whose envelope lets the ack carry a response (errors, options, response_action)
INTERACTIVE_WITH_RESPONSE = {"view_submission", "block_suggestion"}


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

    async def wait_for_async(
        self, predicate: Callable[[Any], Any], timeout: float = 10.0, interval: float = 0.02
    ) -> Any:
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

    def __init__(
        self,
        bot_token: str = "xoxb-test-token",
        usergroups: dict[str, list[str]] | None = None,
        users: dict[str, dict] | None = None,
        app_token: str = APP_TOKEN,
    ) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.app_token = app_token  # app-level token (connections:write) for apps.connections.open
        self.usergroups: dict[str, list[str]] = dict(usergroups or {})
        self.users: dict[str, dict] = dict(users or {})  # users.info overrides, keyed by user id
        self._seq = 0
        self._socket_seq = 0
        self._sockets: dict[str, web.WebSocketResponse] = {}  # live Socket Mode connections by id
        self._connections: list[dict] = []
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
            self._tickets: dict[str, float] = {}  # unused websocket tickets -> issued at
            self._envelopes: list[dict] = []
            self._acks: list[dict] = []
            self._socket_other: list[dict] = []
            self._rejected_sockets: list[dict] = []
            # live connections belong to running clients: keep them (and their records), forget closed ones
            self._connections = [c for c in self._connections if c["id"] in self._sockets]

    def fail_next(
        self, method: str, error: str = "ratelimited", count: int = 1, status: int = 429, retry_after: int | None = 1
    ) -> None:
        with self._lock:
            self._failures.append(dict(method=method, error=error, count=count, status=status, retry_after=retry_after))

    def calls(self, method: str | None = None) -> list[dict]:
        """Every API call: {method, params, headers (no Authorization), response, at (epoch seconds)}."""
        with self._lock:
            return copy.deepcopy([c for c in self._calls if method in (None, c["method"])])

    def responses(self, tag: str | None = None) -> list[dict]:
        """Bodies POSTed to response_url(tag)."""
        with self._lock:
            return copy.deepcopy([r["body"] for r in self._responses if tag in (None, r["tag"])])

    def response_times(self) -> dict[str, float]:
        """When the first answer to each response_url tag arrived (epoch seconds)."""
        with self._lock:
            first: dict[str, float] = {}
            for r in self._responses:
                first.setdefault(r["tag"], r["at"])
            return first

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
        return [
            {**c["params"], "ts": c["response"]["ts"]}
            for c in self.calls(method)
            if c["response"]["ok"] and channel in (None, c["params"]["channel"], c["response"]["channel"])
        ]

    def _summary(self) -> str:
        lines = [
            f"  {c['method']}({', '.join(f'{k}={str(v)[:60]!r}' for k, v in c['params'].items())})"
            f" -> {c['response'].get('error', 'ok')}"
            for c in self.calls()[-20:]
        ]
        with self._lock:
            if self._connections or self._envelopes or self._rejected_sockets:
                acked = {a["envelope_id"] for a in self._acks}
                lines.append(
                    f"  socket mode: {len(self._sockets)} live of {len(self._connections)} connections, "
                    f"{len(self._rejected_sockets)} refused"
                )
                lines += [
                    f"  envelope {e['envelope_id']} {e['type']}"
                    f"{'/' + e['payload'].get('type', '') if isinstance(e['payload'], dict) else ''}"
                    f" -> {'acked' if e['envelope_id'] in acked else 'NOT acked'}"
                    for e in self._envelopes[-10:]
                ]
        return "\n".join(lines) or "  (no calls)"

    # --- Socket Mode: test controls and inspection ---

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket-mode"

    def socket_connections(self, live: bool = False) -> list[dict]:
        """Websocket connections since reset: {id, opened_at, closed_at, close_code, pings, pongs}.

        pings: the client's pings the fake answered (slack_sdk pings right after connecting, then every
        ping_interval); pongs: the client's answers to `socket_ping`.
        """
        with self._lock:
            return copy.deepcopy([c for c in self._connections if not live or c["id"] in self._sockets])

    def socket_envelopes(self) -> list[dict]:
        """Envelopes pushed with socket_send: {envelope_id, type, payload, accepts_response_payload, connection}."""
        with self._lock:
            return copy.deepcopy([{k: v for k, v in e.items() if k != "sent_at"} for e in self._envelopes])

    def socket_acks(self, envelope_id: str | None = None) -> list[dict]:
        """Acks the client sent: {envelope_id, payload (None when the ack had none), message (the JSON as
        received), envelope_type, latency (seconds since the envelope was sent), connection}."""
        with self._lock:
            return copy.deepcopy([a for a in self._acks if envelope_id in (None, a["envelope_id"])])

    def socket_messages(self) -> list[dict]:
        """Text frames from the client that were not acks: {connection, data}."""
        with self._lock:
            return copy.deepcopy(self._socket_other)

    def socket_rejected(self) -> list[dict]:
        """Websocket upgrades refused for an unknown or already used ticket: {ticket, reason}."""
        with self._lock:
            return copy.deepcopy(self._rejected_sockets)

    def socket_send(
        self,
        type: str,
        payload: dict,
        *,
        accepts_response_payload: bool | None = None,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        connection: str | None = None,
        timeout: float = 10.0,
    ) -> str:
        """Push an envelope as Slack does and return its envelope_id.

        type: "slash_commands" (payload: the command's fields, as in the HTTP form body), "interactive"
        (payload: the interaction JSON, e.g. block_actions) or "events_api" (payload: the event_callback
        body). Goes to ``connection`` or the newest live one, waiting up to ``timeout`` for a client to
        connect. This blocks: with a bot in the test's own event loop, first wait_for_async on
        socket_connections(live=True).
        """
        if accepts_response_payload is None:
            accepts_response_payload = type == "slash_commands" or (
                type == "interactive" and payload.get("type") in INTERACTIVE_WITH_RESPONSE
            )
        envelope = {
            "envelope_id": str(uuid.uuid4()),
            "payload": payload,
            "type": type,
            "accepts_response_payload": accepts_response_payload,
        }
        if type == "events_api":
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = retry_reason or ""
        conn_id, ws = self._live_socket(connection, timeout)
        with self._lock:
            self._envelopes.append({**copy.deepcopy(envelope), "connection": conn_id, "sent_at": time.monotonic()})
        self._on_loop(ws.send_str(json.dumps(envelope)))
        return envelope["envelope_id"]

    def socket_disconnect(self, reason: str = "refresh_requested", connection: str | None = None) -> str:
        """Send Slack's `disconnect` message (reason: warning, refresh_requested, link_disabled); the client
        is expected to open a new connection (apps.connections.open again). Returns the connection id."""
        conn_id, ws = self._live_socket(connection, timeout=0)
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": SOCKET_HOST}}
        self._on_loop(ws.send_str(json.dumps(message)))
        return conn_id

    def socket_ping(self, data: bytes = b"fake-slack-ping", connection: str | None = None) -> str:
        """Ping the client as Slack's servers do; its pong is counted in socket_connections()[…]["pongs"]."""
        conn_id, ws = self._live_socket(connection, timeout=0)
        self._on_loop(ws.ping(data))
        return conn_id

    def socket_close(self, connection: str | None = None, code: int = WSCloseCode.GOING_AWAY) -> str:
        """Drop a connection from the server side (a Slack link server going away)."""
        conn_id, ws = self._live_socket(connection, timeout=0)
        self._on_loop(ws.close(code=code, message=b"fake slack closed the link"))
        return conn_id

    def _live_socket(self, connection: str | None, timeout: float) -> tuple[str, web.WebSocketResponse]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                live = {k: ws for k, ws in self._sockets.items() if not ws.closed}
                if connection is None and live:
                    conn_id = next(reversed(live))  # newest
                    return conn_id, live[conn_id]
                if connection in live:
                    return connection, live[connection]
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"FakeSlack: no live Socket Mode connection{' ' + connection if connection else ''}"
                    f" within {timeout}s\nrecorded so far:\n{self._summary()}"
                )
            time.sleep(0.02)

    def _on_loop(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # --- HTTP ---

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/response/{tag}", self._response)
        app.router.add_get("/socket-mode", self._socket)
        app.on_shutdown.append(self._close_sockets)
        return app

    async def _close_sockets(self, _: web.Application) -> None:
        with self._lock:
            live = list(self._sockets.values())
        for ws in live:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._lock:
            issued = self._tickets.pop(ticket, None)  # one connection per apps.connections.open
            if issued is None:
                self._rejected_sockets.append({"ticket": ticket, "reason": "invalid or used ticket"})
        if issued is None:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        # autoping off: the fake answers pings itself so that it can count them
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        with self._lock:
            self._socket_seq += 1
            conn_id = f"conn-{self._socket_seq}"
            record = {
                "id": conn_id,
                "opened_at": time.time(),
                "closed_at": None,
                "close_code": None,
                "pings": 0,
                "pongs": 0,
            }
            self._sockets[conn_id] = ws
            self._connections.append(record)
            num_connections = len(self._sockets)
        try:
            await ws.send_str(
                json.dumps(
                    {
                        "type": "hello",
                        "num_connections": num_connections,
                        "debug_info": {"host": SOCKET_HOST, "build_number": 1, "approximate_connection_time": 18060},
                        "connection_info": {"app_id": APP_ID},
                    }
                )
            )
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                    with self._lock:
                        record["pings"] += 1
                elif msg.type == WSMsgType.PONG:
                    with self._lock:
                        record["pongs"] += 1
                elif msg.type == WSMsgType.TEXT:
                    self._on_client_text(conn_id, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            with self._lock:
                self._sockets.pop(conn_id, None)
                record["closed_at"] = time.time()
                record["close_code"] = ws.close_code
        return ws

    def _on_client_text(self, conn_id: str, data: str) -> None:
        now = time.monotonic()
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        with self._lock:
            if not isinstance(message, dict) or "envelope_id" not in message:
                self._socket_other.append({"connection": conn_id, "data": data})
                return
            sent = next((e for e in self._envelopes if e["envelope_id"] == message["envelope_id"]), None)
            self._acks.append(
                {
                    "envelope_id": message["envelope_id"],
                    "payload": message.get("payload"),
                    "message": message,
                    "envelope_type": sent and sent["type"],
                    "latency": sent and now - sent["sent_at"],
                    "connection": conn_id,
                }
            )

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        form_token = params.pop("token", "")
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth else form_token
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        with self._lock:
            status, extra_headers, body = self._answer(method, params, token)
            call = {"method": method, "params": params, "headers": headers, "response": body, "at": time.time()}
            self._calls.append(copy.deepcopy(call))
        return web.json_response(body, status=status, headers=extra_headers)

    def _answer(self, method: str, params: dict, token: str) -> tuple[int, dict, dict]:
        # apps.connections.open takes only the app-level token, and that token is good for nothing else
        if token and token == self.app_token:
            if method != "apps.connections.open":
                return 200, {}, {"ok": False, "error": "not_allowed_token_type"}
        elif token != self.bot_token:
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        elif method == "apps.connections.open":
            return 200, {}, {"ok": False, "error": "not_allowed_token_type"}
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
            self._responses.append({"tag": request.match_info["tag"], "body": body, "at": time.time()})
        return web.Response(text="ok")

    # --- Web API methods: each returns the response minus "ok"; an "error" key makes it ok: false ---

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _next_ts(self) -> str:
        """A message ts as Slack makes them: the post's time, unique (microseconds apart at least)."""
        self._next()
        self._last_ts = max(time.time(), getattr(self, "_last_ts", 0.0) + 1e-6)
        return f"{self._last_ts:.6f}"

    def _message(self, params: dict, ts: str) -> dict:
        keep = {k: params[k] for k in ("blocks", "attachments", "thread_ts", "metadata") if k in params}
        return {"type": "message", **BOT, "text": params.get("text", ""), "ts": ts, **keep}

    def _view(self, view: dict, view_id: str | None = None) -> dict:
        view_id = view_id or f"V{self._next():010d}"
        return {
            "state": {"values": {}},
            "private_metadata": "",
            "callback_id": "",
            **view,
            "id": view_id,
            "team_id": TEAM_ID,
            "app_id": APP_ID,
            "bot_id": BOT["bot_id"],
            "hash": f"1700000000.{self._next()}",
        }

    @staticmethod
    def _dm(channel: str) -> str:
        # posting to a user id lands in the bot's DM with them
        return "D" + channel if channel[:1] in ("U", "W") else channel

    def _m_apps_connections_open(self, p: dict) -> dict:
        ticket = str(uuid.uuid4())
        self._tickets[ticket] = time.time()
        return {"url": f"{self.socket_url}?{urlencode({'ticket': ticket, 'app_id': APP_ID})}"}

    def _m_auth_test(self, p: dict) -> dict:
        return {
            "url": WORKSPACE_URL,
            "team": "Promobot Test",
            "user": "promobot",
            "team_id": TEAM_ID,
            "user_id": BOT["user"],
            "bot_id": BOT["bot_id"],
            "is_enterprise_install": False,
        }

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
        user = {
            "id": uid,
            "team_id": TEAM_ID,
            "name": f"user_{uid.lower()}",
            "real_name": f"User {uid}",
            "tz": "UTC",
            "tz_label": "Coordinated Universal Time",
            "tz_offset": 0,
            "is_bot": False,
            "deleted": False,
            "profile": {"real_name": f"User {uid}", "display_name": f"user_{uid.lower()}"},
        }
        return {"user": {**user, **self.users.get(uid, {})}}

    def _m_files_getUploadURLExternal(self, p: dict) -> dict:
        if not p.get("filename") or not p.get("length"):
            return {"error": "invalid_arguments"}
        file_id = f"F{self._next():010d}"
        self._uploads[file_id] = {"filename": p["filename"], "bytes": None}
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _m_conversations_history(self, p: dict) -> dict:
        """The channel's messages, newest first; metadata only with include_all_metadata, as Slack does."""
        channel = p.get("channel")
        if not channel:
            return {"error": "channel_not_found"}
        oldest = float(p.get("oldest") or 0)
        with_metadata = str(p.get("include_all_metadata", "")).lower() in ("1", "true")
        found = []
        for c in self._calls:
            if c["method"] != "chat.postMessage" or not c["response"]["ok"] or c["response"]["channel"] != channel:
                continue
            message = dict(c["response"]["message"])
            if float(message["ts"]) < oldest or message.get("thread_ts"):
                continue
            if not with_metadata:
                message.pop("metadata", None)
            found.append(message)
        limit = int(p.get("limit") or 100)
        return {
            "messages": found[::-1][:limit],
            "has_more": len(found) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _m_files_list(self, p: dict) -> dict:
        channel, ts_from = p.get("channel"), float(p.get("ts_from") or 0)
        files = [
            {
                "id": f["id"],
                "name": f["filename"],
                "title": f["title"],
                "channels": [f["channel_id"]],
                "timestamp": int(f["at"]),
            }
            for f in self._files
            if (channel is None or f["channel_id"] == channel) and f["at"] >= ts_from
        ]
        return {"files": files[::-1], "paging": {"count": len(files), "total": len(files), "page": 1, "pages": 1}}

    def _m_files_completeUploadExternal(self, p: dict) -> dict:
        wanted = p.get("files") or []
        if not wanted or any(self._uploads.get(f.get("id"), {}).get("bytes") is None for f in wanted):
            return {"error": "file_not_found"}
        done = []
        for f in wanted:
            upload = self._uploads.pop(f["id"])
            done.append(
                {
                    "id": f["id"],
                    "filename": upload["filename"],
                    "title": f.get("title") or upload["filename"],
                    "channel_id": p.get("channel_id"),
                    "initial_comment": p.get("initial_comment"),
                    "thread_ts": p.get("thread_ts"),
                    "bytes": upload["bytes"],
                    "at": time.time(),
                }
            )
        self._files.extend(done)
        return {
            "files": [
                {"id": f["id"], "name": f["filename"], "title": f["title"], "size": len(f["bytes"])} for f in done
            ]
        }
