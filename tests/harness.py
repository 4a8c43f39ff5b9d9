"""The scenario-test harness: the real app on a real port, signed Slack requests, pipeline events.

Importable (not buried in conftest) so that tests and bench scripts can use it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from bot.config import Settings
from storage.models import AuditEvent, Promotion
from tests.oci_registry import canonical_digest, push_canonical

SIGNING_SECRET = "test-signing-secret-3f9c"
BOT_TOKEN = "xoxb-test-token"
API_TOKEN = "pipeline-token-7d1e"
GITHUB_TOKEN = "ghp_test"
WEBHOOK_SECRET = "webhook-secret-55aa"

FIXTURES = Path(__file__).parent / "fixtures"
IMAGE_HOST = "registry.example.com"  # in CONFIG; the harness points it at a real registry on loopback
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # what a registry takes as a tag
POSTGRES_URL = os.environ.get("PROMOBOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

CONFIG = """
environments:
  - name: dev
    checks: {digest_matches: false}
  - name: staging
    approval: automatic
    checks: {digest_matches: false}
  - name: production
    approval: manual
    approvers: [U0LEAD, S0RELEASE]
    required_approvals: 1
    approval_ttl: 4h
    soak_time: 1h
    timezone: Europe/Berlin
policy:
  immutable_tag_pattern: "^[0-9a-f]{7,40}$"
  block_severities: [CRITICAL]
  prohibited_licenses: [AGPL-3.0-only]
  require_sbom: true
services:
  api-gateway:
    repository: acme/api-gateway
    image: registry.example.com/acme/api-gateway
    workflow: deploy.yml
    ref: main
    channel: C0DEPLOYS
  billing:
    repository: acme/billing
    image: registry.example.com/acme/billing
    workflow: deploy.yml
    ref: main
    channel: C0BILLING
"""


def config_on(registry_host: str, text: str = CONFIG) -> str:
    """``text`` with its images in the test registry: production checks digests, which cannot be switched off."""
    return text.replace(IMAGE_HOST, registry_host)


def process_config(registry_host: str) -> str:
    """CONFIG for real ``promobot serve`` processes: images in the test registry, and no soak in production,
    because a bot process keeps its own clock (``seed`` cannot record its history as of hours ago there)."""
    return config_on(registry_host).replace("soak_time: 1h", "soak_time: 0s")


RUN_NAME = "Deploy ${{ inputs.environment }} ${{ inputs.image_tag }} [${{ inputs.promotion_id }}]"


def settings_for(database_url: str, slack, github, **overrides):
    values = dict(
        promobot_config="(tests)",
        database_url=database_url,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.api_url,
        github_token=GITHUB_TOKEN,
        github_api_url=github.api_url,
        github_webhook_secret=WEBHOOK_SECRET,
        promobot_api_token=API_TOKEN,
        promobot_instance_id="test-1",
        promobot_outbox_interval=0.2,
        promobot_tracking_poll_interval=0.3,
        promobot_run_listing_lag=3.0,  # the GitHub stand-in lists a run at once unless a test delays it
    )
    values.update(overrides)
    return Settings(**values)


def require_services() -> bool:
    return os.environ.get("PROMOBOT_REQUIRE_SERVICES") == "1"


def service_unavailable(reason: str) -> None:
    """Skip on a laptop without the service; fail in CI, where PROMOBOT_REQUIRE_SERVICES=1."""
    if require_services():
        pytest.fail(f"{reason} (PROMOBOT_REQUIRE_SERVICES=1 turns this skip into a failure)")
    pytest.skip(reason)


def database_kind() -> str:
    return os.environ.get("PROMOBOT_TEST_DATABASE", "sqlite")


class PostgresSchema:
    """A fresh schema on the test PostgreSQL server, dropped afterwards."""

    def __init__(self, base_url: str = POSTGRES_URL):
        self.base_url = base_url
        self.schema = f"t_{uuid.uuid4().hex[:12]}"
        try:
            self._admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
            with self._admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{self.schema}"')
        except Exception as exc:  # unreachable server, missing driver
            service_unavailable(
                f"PostgreSQL not reachable at {sa.engine.make_url(base_url).render_as_string()}: {type(exc).__name__}"
            )

    @property
    def url(self) -> str:
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}options=-csearch_path%3D{self.schema}"

    def drop(self) -> None:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{self.schema}" CASCADE')
        self._admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sign(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Headers as Slack sends them: v0 HMAC-SHA256 over 'v0:{timestamp}:{body}'."""
    ts = str(timestamp or int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


@dataclass
class SlackUser:
    """Sends what the Slack client would send when this user acts."""

    harness: Harness
    user_id: str
    channel: str = "C0DEPLOYS"

    async def command(self, command: str, text: str) -> aiohttp.ClientResponse:
        tag = f"{command.strip('/')}-{uuid.uuid4().hex[:8]}"
        body = urlencode(
            {
                "token": "legacy-verification-token",
                "team_id": "T0TEST",
                "team_domain": "acme",
                "channel_id": self.channel,
                "channel_name": "deploys",
                "user_id": self.user_id,
                "user_name": self.user_id.lower(),
                "command": command,
                "text": text,
                "api_app_id": "A0TEST",
                "is_enterprise_install": "false",
                "response_url": self.harness.slack.response_url(tag),
                "trigger_id": f"{uuid.uuid4().hex}.trigger",
            }
        )
        self.last_response_tag = tag
        return await self.harness.post_slack(body)

    async def click(self, card_message: dict, action_id: str) -> aiohttp.ClientResponse:
        """Press a button on a message the bot posted (as recorded by the Slack stand-in)."""
        element = next(
            el
            for b in card_message["blocks"]
            if b["type"] == "actions"
            for el in b["elements"]
            if el["action_id"] == action_id
        )
        tag = f"action-{uuid.uuid4().hex[:8]}"
        self.last_response_tag = tag
        payload = {
            "type": "block_actions",
            "team": {"id": "T0TEST", "domain": "acme"},
            "user": {"id": self.user_id, "username": self.user_id.lower(), "team_id": "T0TEST"},
            "api_app_id": "A0TEST",
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": card_message["ts"],
                "channel_id": card_message["channel"],
                "is_ephemeral": False,
            },
            "trigger_id": f"{uuid.uuid4().hex}.trigger",
            "channel": {"id": card_message["channel"]},
            "message": {"type": "message", "ts": card_message["ts"], "blocks": card_message["blocks"]},
            "response_url": self.harness.slack.response_url(tag),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": next(b["block_id"] for b in card_message["blocks"] if b["type"] == "actions"),
                    "text": element["text"],
                    "value": element["value"],
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return await self.harness.post_slack(urlencode({"payload": json.dumps(payload)}))

    async def submit_view(self, view: dict, values: dict) -> aiohttp.ClientResponse:
        payload = {
            "type": "view_submission",
            "team": {"id": "T0TEST", "domain": "acme"},
            "user": {"id": self.user_id, "username": self.user_id.lower(), "team_id": "T0TEST"},
            "api_app_id": "A0TEST",
            "token": "legacy-verification-token",
            "trigger_id": "t.1",
            "view": {**view, "id": "V0TEST", "state": {"values": values}},
            "response_urls": [],
        }
        return await self.harness.post_slack(urlencode({"payload": json.dumps(payload)}))

    def replies(self) -> list[dict]:
        return self.harness.slack.responses(self.last_response_tag)


@dataclass
class Harness:
    base_url: str
    slack: Any
    github: Any
    bot: Any
    session: aiohttp.ClientSession
    clock: Clock
    extra: dict = field(default_factory=dict)
    registry_host: str | None = None  # the OCI registry the config's images live in

    def user(self, user_id: str, channel: str = "C0DEPLOYS") -> SlackUser:
        return SlackUser(self, user_id, channel)

    async def post_slack(self, body: str, headers: dict | None = None) -> aiohttp.ClientResponse:
        resp = await self.session.post(
            f"{self.base_url}/slack/events", data=body.encode(), headers=headers or sign(body)
        )
        await resp.read()
        return resp

    async def event(self, body: dict, *, token: str | None = API_TOKEN) -> tuple[int, dict]:
        if body.get("type") == "artifact.built" and self.registry_host and IMAGE_TAG.fullmatch(str(body.get("tag"))):
            # as a build job does: push the image, then report it
            await asyncio.to_thread(self.push_image, str(body.get("service")), str(body.get("tag")))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.post(f"{self.base_url}/api/v1/events", json=body, headers=headers) as resp:
            return resp.status, await resp.json()

    def push_image(self, service: str, tag: str) -> str | None:
        """Push the canonical image of ``service:tag`` to the registry the config names (None: the registry
        refused the name, as it would a CI job's)."""
        assert self.registry_host is not None
        if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", service):
            return None
        return push_canonical(self.registry_host, f"acme/{service}", service, tag)

    async def get(self, path: str, *, token: str | None = API_TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(f"{self.base_url}{path}", headers=headers) as resp:
            return resp.status, await resp.json()

    async def wait(self, predicate, timeout: float = 10.0):
        return await self.slack.wait_for_async(predicate, timeout=timeout)

    def cards(self, channel: str = "C0DEPLOYS", target: str | None = "production") -> list[dict]:
        """Approval cards the bot posted (not their thread replies), into ``target`` when given."""
        return [
            m
            for m in self.slack.messages(channel)
            if "thread_ts" not in m
            and m.get("blocks")
            and any(b["type"] == "header" for b in m["blocks"])
            and (target is None or f"→ {target}" in header_text(m))
        ]


class Clock:
    """A settable clock for the engine; real time unless set."""

    def __init__(self) -> None:
        self.fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed or datetime.now(UTC)


def header_text(message: dict) -> str:
    return next(b["text"]["text"] for b in message["blocks"] if b["type"] == "header")


def all_text(message: dict) -> str:
    """Every piece of text in a message's blocks, for assertions on what a person reads."""
    parts = [message.get("text") or ""]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                parts.append(node["text"])
            for v in node.values():
                if isinstance(v, (dict, list)):
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(message.get("blocks") or [])
    return "\n".join(parts)


def artifact(service: str, tag: str, **overrides: Any) -> dict:
    body = {
        "type": "artifact.built",
        "service": service,
        "tag": tag,
        "digest": canonical_digest(service, tag),  # what the harness pushes to the registry for it
        "commit_sha": (tag + "0" * 40)[:40],
        "pipeline_run_id": "4242",
        "built_at": "2026-11-20T08:00:00Z",
    }
    body.update(overrides)
    return body


def deployed(service: str, tag: str, env: str, status: str = "success", **kw: Any) -> dict:
    return {
        "type": "deployment.finished",
        "service": service,
        "tag": tag,
        "environment": env,
        "status": status,
        "run_id": kw.pop("run_id", "77"),
        **kw,
    }


def verified(service: str, tag: str, env: str, result: str = "passed", **kw: Any) -> dict:
    return {
        "type": "verification.finished",
        "service": service,
        "tag": tag,
        "environment": env,
        "result": result,
        "checks": kw.pop("checks", {"smoke": result}),
        **kw,
    }


RECORD_SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "promotion-record.schema.json"


def valid_record(record: dict) -> dict:
    """``record`` after checking it against the published JSON Schema of the promotion record."""
    import jsonschema

    schema = json.loads(RECORD_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(record)
    return record


def fixture_json(relative: str) -> dict:
    """A sample report, SBOM or payload from tests/fixtures (see tests/fixtures/SOURCES.md)."""
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))


# --- scenario steps shared by the scenario tests ----------------------------------------------------


TAG = "7a3f9c2"


def ago(**kw) -> str:
    return (datetime.now(UTC) - timedelta(**kw)).isoformat()


async def seed(
    h,
    service="api-gateway",
    tag=TAG,
    *,
    envs=("dev", "staging"),
    scan="trivy/trivy-centos-7-low-medium.json",
    scanner="trivy",
    **built: Any,
):
    """An artifact built, scanned, with an SBOM, deployed and verified through ``envs`` hours ago: in dev by
    the pipeline's own reports (builds land there), in every later environment through the promotion promobot
    dispatched there (gate 1 into staging, an approved request into production), whose run reports back.
    Stops where gate 1 refuses: the artifact never reached that environment. ``built`` overrides fields of its
    artifact.built event (digest, built_at, …)."""
    body = artifact(service, tag, **{"built_at": ago(hours=30), **built})
    h.github.add_commits(f"acme/{service}", "main", [body["commit_sha"]])
    for event in (
        body,
        {"type": "scan.finished", "service": service, "tag": tag, "scanner": scanner, "report": fixture_json(scan)},
        {
            "type": "sbom.published",
            "service": service,
            "tag": tag,
            "format": "cyclonedx",
            "sbom": fixture_json("sbom/cyclonedx-1.6-licenses-id-expression-name.json"),
        },
    ):
        status, answer = await h.event(event)
        assert status == 202, answer
    for i, env in enumerate(envs):
        # promobot records the history as it happened: its own clock says when (soak counts from there)
        # verified 9, 7 … hours ago, half an hour after the deployment: well inside the one-hour verification
        # deadline (verified exactly at it, a tracking pass could record "no verification in time" first)
        verified_at = datetime.now(UTC) - timedelta(hours=9 - 2 * i)
        deployed_at = verified_at - timedelta(minutes=30)
        if env == "dev":
            for event, when in (
                (deployed(service, tag, env, finished_at=deployed_at.isoformat()), deployed_at),
                (verified(service, tag, env, finished_at=verified_at.isoformat()), verified_at),
            ):
                with recorded_at(h, when):
                    status, answer = await h.event(event)
                assert status == 202, answer
        elif (
            await through_promotion(h, tag, env, service=service, deployed_at=deployed_at, verified_at=verified_at)
            is None
        ):
            break
    return body


@contextmanager
def recorded_at(h, when: datetime | None):
    """Hold the engine's clock at ``when`` (only for a bot in this process; a bot process keeps its own)."""
    before = h.clock.fixed
    if h.bot is not None and when is not None:
        h.clock.fixed = when
    try:
        yield
    finally:
        h.clock.fixed = before


def _channel(h, service: str) -> str:
    return h.bot.config.services[service].channel if h.bot else {"billing": "C0BILLING"}.get(service, "C0DEPLOYS")


async def through_promotion(
    h,
    tag: str,
    environment: str,
    *,
    service: str = "api-gateway",
    status: str = "success",
    result: str | None = "passed",
    deployed_at: datetime | str | None = None,
    verified_at: datetime | str | None = None,
    approver: str = "U0LEAD",
) -> dict | None:
    """Take ``tag`` into ``environment`` the one way anything gets past dev: a promotion (gate 1's into
    staging, else one requested and approved), dispatched by promobot, whose run reports its deployment and
    (``result``) verification back. Returns the dispatch, or None when gate 1 refused to start it."""
    channel = _channel(h, service)

    def ours(d: dict) -> bool:
        return (
            d["inputs"]["environment"] == environment
            and d["inputs"]["image_tag"] == tag
            and d["repo"].endswith(service)
        )

    if environment == "staging":  # dev's verification started gate 1
        refused = f"Automatic promotion of {service} `{tag}` to staging"
        found = await h.wait(
            lambda s: (
                [d for d in h.github.dispatches() if ours(d)]
                or [m for m in s.messages(channel) if refused in m["text"]]
            )
        )
        if "inputs" not in found[-1]:
            return None
        dispatch = found[-1]
    else:
        requester = h.user("U0DEV", channel)
        resp = await requester.command("/promote", f"{service} {tag} to {environment}")
        assert resp.status == 200
        await h.wait(lambda s: requester.replies())
        pid = requester.replies()[0]["text"].split("`")[1]
        # the card is posted after the reply (its evidence is gathered first)
        card = (await h.wait(lambda s: [c for c in h.cards(channel, target=environment) if pid in all_text(c)]))[0]
        await h.user(approver, channel).click(card, "promotion.approve")
        dispatch = (
            await h.wait(lambda s: [d for d in h.github.dispatches() if ours(d) and pid in d["inputs"].values()])
        )[-1]
    pid = dispatch["inputs"]["promotion_id"]
    # reported once promobot has recorded its dispatch (the card says Deploying), as a real run would be
    await h.wait(lambda s: [u for u in s.updates(channel) if "· Deploying" in header_text(u) and pid in all_text(u)])
    events = [
        (deployed(service, tag, environment, status, run_id=str(dispatch["run_id"])), deployed_at),
    ]
    if status == "success" and result is not None:
        events.append((verified(service, tag, environment, result), verified_at))
    times = [datetime.fromisoformat(at) if isinstance(at, str) else at for _, at in events]
    # between the reports the clock stays where the deployment left it: a tracking pass in between must not
    # see a deployment "hours ago" still waiting for its verification and fail it
    with recorded_at(h, times[0]):
        for (event, _), when in zip(events, times, strict=True):
            if when is not None:
                event["finished_at"] = when.isoformat()
            with recorded_at(h, when):  # as it happened: promobot's own clock says when (soak counts from there)
                answer_status, answer = await h.event(event)
            assert answer_status == 202 and answer["result"] == "recorded", answer
    return dispatch


def production_dispatches(h) -> list[dict]:
    """Dispatches into production (seeding also starts gate 1 into staging by itself)."""
    return [d for d in h.github.dispatches() if d["inputs"]["environment"] == "production"]


async def recorded_dispatch(h) -> dict:
    """The first dispatch into production, once promobot has recorded it as dispatched. GitHub has the dispatch
    a moment before promobot commits it, and a pipeline that reports the run in between is out of band (409);
    a real pipeline's report comes seconds later."""
    dispatch = (await h.wait(lambda s: production_dispatches(h)))[0]
    await h.wait(lambda s: promotion(h, dispatch["inputs"]["promotion_id"]).status == "dispatched")
    return dispatch


async def request_card(h, requester="U0DEV", text=f"api-gateway {TAG}"):
    """``/promote text``; once promobot answers, and (when it opened a promotion) once its card is posted."""
    dev = h.user(requester)
    resp = await dev.command("/promote", text)
    assert resp.status == 200
    reply = (await h.wait(lambda s: dev.replies()))[0]["text"]
    opened = re.match(r":white_check_mark: Requested .*?`(prm-[0-9a-f]+)`", reply)
    if not opened:  # a refusal is what some tests want; when a test wanted a card, its log says why there is none
        logging.getLogger("tests.harness").warning("/promote %s answered without a promotion: %s", text, reply[:500])
        return dev
    # the card is posted after the reply (its evidence is gathered first): wait for the card itself, a
    # message of its own with a header, not a direct message or a thread reply that names the promotion
    await h.wait(
        lambda s: [
            m
            for m in s.messages()
            if "thread_ts" not in m
            and any(b["type"] == "header" for b in m.get("blocks") or [])
            and opened.group(1) in all_text(m)
        ]
    )
    return dev


async def dispatched(h, *, tag: str = TAG, environment: str = "production", approver: str = "U0LEAD") -> dict:
    """Request ``tag`` into ``environment``, approve it and wait for promobot's dispatch (as GitHub got it)."""
    await request_card(h, text=f"api-gateway {tag} to {environment}")
    await h.user(approver).click(h.cards(target=environment)[-1], "promotion.approve")
    found = await h.wait(
        lambda s: [
            d
            for d in h.github.dispatches()
            if d["inputs"]["environment"] == environment and d["inputs"]["image_tag"] == tag
        ]
    )
    return found[-1]


async def authorize(h, dispatch: dict | None = None, *, token: str | None = API_TOKEN, **body: Any) -> tuple[int, dict]:
    """What the deploy workflow's authorize step sends: by default the claims of ``dispatch``'s own run."""
    if dispatch is not None:
        inputs = dispatch["inputs"]
        body = {
            "service": "api-gateway",
            "environment": inputs["environment"],
            "image_digest": inputs["image_digest"],
            "promotion_id": inputs["promotion_id"],
            "run_id": dispatch["run_id"],
            "run_attempt": 1,
            "repository": dispatch["repo"],
            **body,
        }
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with h.session.post(f"{h.base_url}/api/v1/deployments/authorize", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


_APP_KEY: list[str] = []


def github_app_settings() -> dict[str, Any]:
    """Settings overrides that make promobot a GitHub App installation instead of a token's user."""
    if not _APP_KEY:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _APP_KEY.append(pem.decode())
    return dict(
        github_token=None, github_app_id="4242", github_app_private_key=_APP_KEY[0], github_app_installation_id=1
    )


async def open_home(h, user: str) -> dict:
    """Send app_home_opened as Slack does (a signed Events API callback) and return the published view."""
    body = json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": "T0TEST",
            "api_app_id": "A0TEST",
            "type": "event_callback",
            "event_id": f"Ev{time.time_ns()}",
            "event_time": int(time.time()),
            "event": {
                "type": "app_home_opened",
                "user": user,
                "channel": f"D{user}",
                "tab": "home",
                "event_ts": f"{time.time():.6f}",
            },
        }
    )
    before = len(h.slack.calls("views.publish"))
    resp = await h.post_slack(body, headers={**sign(body), "Content-Type": "application/json"})
    assert resp.status == 200
    calls = await h.wait(lambda s: s.calls("views.publish")[before:])
    assert calls[0]["params"]["user_id"] == user
    return calls[0]["params"]["view"]


# --- reading what the bot did -------------------------------------------------------------------


async def card_update(h, card: dict, predicate, timeout: float = 10.0) -> dict:
    """The latest redraw of ``card`` for which ``predicate(update)`` holds."""
    found = await h.wait(
        lambda s: [u for u in s.updates(card["channel"]) if u["ts"] == card["ts"] and predicate(u)], timeout=timeout
    )
    return found[-1]


def thread(h, card: dict) -> list[str]:
    return [m["text"] for m in h.slack.messages(card["channel"]) if m.get("thread_ts") == card["ts"]]


async def in_thread(h, card: dict, needle: str) -> str:
    """Wait for a reply in the card's thread that contains ``needle``."""
    return (await h.wait(lambda s: [t for t in thread(h, card) if needle in t]))[0]


def audit_actions(h, **where) -> list[tuple[str, str]]:
    with Session(h.bot.engine) as s:
        q = select(AuditEvent).order_by(AuditEvent.seq)
        for key, value in where.items():
            q = q.where(getattr(AuditEvent, key) == value)
        return [(e.action, e.actor) for e in s.exec(q)]


def promotion(h, promotion_id: str) -> Promotion:
    with Session(h.bot.engine) as s:
        return s.get(Promotion, promotion_id)


def card_id(card: dict) -> str:
    return next(el["value"] for b in card["blocks"] if b["type"] == "actions" for el in b["elements"])
