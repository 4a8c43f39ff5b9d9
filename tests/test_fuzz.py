"""Property-based inputs against the running server: the pipeline API, the GitHub webhook, and signed Slack
commands, clicks and modal submissions with random text. Whatever arrives: no server error, no row written
by an input the server refused, no listener that crashed, and /healthz still answers.

PROMOBOT_FUZZ_EXAMPLES sets how many inputs in all (CI: 10,000; default 300).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import SQLModel

from tests.fakes.slack_api import ThreadedFake
from tests.harness import API_TOKEN, CONFIG, WEBHOOK_SECRET, settings_for, sign

TOTAL = int(os.environ.get("PROMOBOT_FUZZ_EXAMPLES", "300"))


def fuzz(share: int) -> settings:
    """Settings for a property that gets ``share`` tenths of the inputs."""
    return settings(
        max_examples=max(1, TOTAL * share // 10),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


SERVICES = ["api-gateway", "billing"]
ENVIRONMENTS = ["dev", "staging", "production"]
TAGS = ["7a3f9c2", "a1b2c3d", "latest"]


class LiveBot(ThreadedFake):
    """The real app (routes, Bolt, engine, storage) served from its own thread, for synchronous property tests."""

    def __init__(self, bot: Any) -> None:
        super().__init__()
        self.bot = bot

    def _make_app(self):
        from bot.server import make_web_app

        # the background loops (outbox, tracking, purge) are not what is fuzzed; their own writes would blur
        # the "nothing written" check
        return make_web_app(self.bot, background=False)

    def _summary(self) -> str:
        return ""

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


@pytest.fixture
def live(database_url, slack, github) -> Iterator[LiveBot]:
    from bot.app import build
    from bot.config import parse_config

    github.add_commits("acme/api-gateway", "main", [("7a3f9c2" + "0" * 40)[:40]])
    bot = build(settings_for(database_url, slack, github), parse_config(CONFIG))
    server = LiveBot(bot).start()
    # some history, so that inputs can name real artifacts and promotions
    for event in (
        {
            "type": "artifact.built",
            "service": "api-gateway",
            "tag": "7a3f9c2",
            "digest": "sha256:" + "ab" * 32,
            "commit_sha": ("7a3f9c2" + "0" * 40)[:40],
            "pipeline_run_id": "1",
            "built_at": "2026-11-20T08:00:00Z",
        },
        {
            "type": "deployment.finished",
            "service": "api-gateway",
            "tag": "7a3f9c2",
            "environment": "dev",
            "status": "success",
            "run_id": "5",
        },
    ):
        status, _ = post_event(server, json.dumps(event).encode())
        assert status == 202
    yield server
    server.stop()
    bot.engine.dispose()


def post_event(server: LiveBot, body: bytes, token: str | None = API_TOKEN) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return server.request("POST", "/api/v1/events", body, headers)


def row_counts(server: LiveBot) -> dict[str, int]:
    """Rows per table, in one query (it runs twice per input)."""
    tables = SQLModel.metadata.sorted_tables
    query = sa.select(*(sa.select(sa.func.count()).select_from(t).scalar_subquery().label(t.name) for t in tables))
    with server.bot.engine.connect() as conn:
        return dict(conn.execute(query).one()._mapping)


SEEN: Counter[tuple[str, int]] = Counter()  # (route, status) of every input sent: printed for the record


def check(server: LiveBot, status: int, body: bytes, before: dict[str, int], what: Any, route: str) -> None:
    SEEN[(route, status)] += 1
    assert status < 500, (status, body[:300], what)
    if status >= 400:
        after = row_counts(server)
        changed = {table for table in after if after[table] != before.get(table)}
        if status == 409 and json.loads(body).get("rule") in AUDITED_REFUSALS:
            # refused, and on the record: an audit event, the kept report, an alert on its way
            assert changed <= {"auditevent", "audithead", "outofbandreport", "outboxentry"}, (changed, what)
        else:
            assert not changed, ("a refused input wrote rows", status, changed, what)


AUDITED_REFUSALS = {"tag mutation", "out-of-band report", "promotion mismatch"}  # README: Pipeline events, 409


@pytest.fixture
def no_crashes(caplog):
    """No listener, handler or engine call logged an error while the inputs ran."""
    caplog.set_level(logging.WARNING)
    yield
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR and not r.name.startswith("tests")]
    assert not crashes, [f"{r.name}: {r.getMessage()}" for r in crashes[:5]]


# --- strategies -------------------------------------------------------------------------------------

text = st.text(max_size=40)
header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)  # what HTTP headers carry
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
plausible = {
    "type": st.sampled_from(
        ["artifact.built", "deployment.finished", "verification.finished", "scan.finished", "sbom.published"]
    )
    | text,
    "service": st.sampled_from(SERVICES) | text,
    "tag": st.sampled_from(TAGS) | text,
    "environment": st.sampled_from(ENVIRONMENTS) | text,
    "digest": st.just("sha256:" + "ab" * 32) | text,
    "commit_sha": st.just("7a3f9c2" + "0" * 33) | text,
    "pipeline_run_id": text | st.integers(),
    "built_at": st.sampled_from(["2026-11-20T08:00:00Z", "now", "yesterday", "2026-11-20T08:00:00"]) | text,
    "status": st.sampled_from(["success", "failure"]) | text,
    "result": st.sampled_from(["passed", "failed"]) | text,
    "run_id": text | st.integers(),
    "url": st.sampled_from(["https://ci.example/1", "https://x/<!channel>", "javascript:x"]) | text,
    "checks": st.dictionaries(text, st.sampled_from(["passed", "failed"]) | json_values, max_size=3),
    "scanner": st.sampled_from(["trivy", "grype", "sarif", "cyclonedx"]) | text,
    "format": st.sampled_from(["cyclonedx", "spdx"]) | text,
    "report": json_values,
    "sbom": json_values,
    "event_id": text,
    "finished_at": st.sampled_from(["2026-11-20T08:00:00Z"]) | text,
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.sets(st.sampled_from(sorted(plausible)), min_size=1))
    event = {key: draw(plausible[key]) for key in keys}
    if draw(st.booleans()):
        event[draw(text)] = draw(json_values)  # an unknown field
    return event


REQUIRED = {
    "artifact.built": ["service", "tag", "digest", "commit_sha", "pipeline_run_id", "built_at"],
    "deployment.finished": ["service", "tag", "environment", "status", "run_id"],
    "verification.finished": ["service", "tag", "environment", "result", "checks"],
    "scan.finished": ["service", "tag", "scanner", "report"],
    "sbom.published": ["service", "tag", "format", "sbom"],
}
VALID = {
    "service": st.sampled_from(SERVICES),
    "tag": st.sampled_from(["7a3f9c2", "a1b2c3d", "0c0ffee"]),
    "environment": st.sampled_from(ENVIRONMENTS),
    "digest": st.just("sha256:" + "ab" * 32),
    "commit_sha": st.just("7a3f9c2" + "0" * 33),
    "pipeline_run_id": st.just("42"),
    "built_at": st.just("2026-11-20T08:00:00Z"),
    "status": st.sampled_from(["success", "failure"]),
    "run_id": st.sampled_from(["5", "6"]),
    "result": st.sampled_from(["passed", "failed"]),
    "checks": st.dictionaries(text, st.sampled_from(["passed", "failed"]), max_size=3),
    "scanner": st.sampled_from(["trivy", "grype", "sarif", "cyclonedx"]),
    "format": st.sampled_from(["cyclonedx", "spdx"]),
    "report": json_values,
    "sbom": json_values,
}


@st.composite
def nearly_valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A complete event of a real type, sometimes with one field replaced by something else."""
    kind = draw(st.sampled_from(sorted(REQUIRED)))
    event: dict[str, Any] = {"type": kind, **{key: draw(VALID[key]) for key in REQUIRED[kind]}}
    if draw(st.booleans()):
        event["event_id"] = draw(st.sampled_from(["fuzz-1", "fuzz-2"]) | text)
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(event)))
        event[key] = draw(plausible.get(key, json_values))
    return event


bodies = (
    nearly_valid_events().map(lambda e: json.dumps(e).encode())
    | events().map(lambda e: json.dumps(e).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
    | text.map(str.encode)
)


@st.composite
def webhooks(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    run = {
        "id": draw(st.integers(min_value=0, max_value=10**12) | text),
        "name": draw(text),
        "display_title": draw(st.sampled_from(["Deploy production 7a3f9c2 [prm-0123456789]", ""]) | text),
        "status": draw(st.sampled_from(["queued", "in_progress", "completed"]) | text),
        "conclusion": draw(st.sampled_from(["success", "failure", None]) | text),
        "event": draw(st.sampled_from(["workflow_dispatch", "push", "pull_request"]) | text),
        "path": draw(st.sampled_from([".github/workflows/deploy.yml"]) | text),
        "html_url": draw(text),
    }
    payload = draw(
        st.fixed_dictionaries(
            {
                "action": st.sampled_from(["requested", "in_progress", "completed"]) | text,
                "workflow_run": st.just(run) | json_values,
                "repository": st.fixed_dictionaries({"full_name": st.sampled_from(["acme/api-gateway"]) | text})
                | json_values,
            }
        )
        | json_values
    )
    body = json.dumps(payload).encode() if draw(st.booleans()) else draw(st.binary(max_size=100))
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": draw(
            st.sampled_from(["workflow_run", "ping", "push", "deployment_protection_rule"]) | header_text
        ),
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": signature if draw(st.integers(0, 9)) else draw(header_text),
    }
    return body, headers


words = st.sampled_from(
    [
        "api-gateway",
        "billing",
        "7a3f9c2",
        "latest",
        "to",
        "in",
        "production",
        "staging",
        "--check",
        "lock",
        "unlock",
        "hold",
        "clear",
        "revoke",
        "help",
        "prm-0123456789",
        "<!channel>",
        "*bold*",
        "`",
        "'",
        '"',
    ]
) | st.text(max_size=12)


@st.composite
def slack_requests(draw: st.DrawFn) -> tuple[str, str]:
    """(content type, body) of a signed Slack request: a command, a button click or a modal submission."""
    user = draw(st.sampled_from(["U0DEV", "U0LEAD", "U0RM1", "W0X"]) | st.text(max_size=8))
    kind = draw(st.sampled_from(["command", "action", "view"]))
    if kind == "command":
        form = {
            "command": draw(st.sampled_from(["/promote", "/rollback", "/status"])),
            "text": " ".join(draw(st.lists(words, max_size=6))) if draw(st.booleans()) else draw(st.text(max_size=60)),
            "user_id": user,
            "user_name": "fuzz",
            "team_id": "T0TEST",
            "channel_id": "C0DEPLOYS",
            "response_url": "http://127.0.0.1:9/response",
            "trigger_id": "t.1",
            "api_app_id": "A0TEST",
            "token": "legacy",
        }
        return "application/x-www-form-urlencoded", urlencode(form)
    if kind == "action":
        payload: Any = {
            "type": "block_actions",
            "team": {"id": "T0TEST"},
            "user": {"id": user},
            "api_app_id": "A0TEST",
            "trigger_id": "t.1",
            "response_url": "http://127.0.0.1:9/response",
            "token": "legacy",
            "container": {"type": "message", "message_ts": "1.0", "channel_id": "C0DEPLOYS"},
            "channel": {"id": "C0DEPLOYS"},
            "actions": [
                {
                    "action_id": draw(
                        st.sampled_from(
                            ["promotion.approve", "promotion.reject", "promotion.cancel", "promotion.revoke"]
                        )
                        | st.text(max_size=20)
                    ),
                    "block_id": "b",
                    "type": "button",
                    "action_ts": "1.0",
                    "value": draw(st.sampled_from(["prm-0123456789"]) | st.text(max_size=30)),
                }
            ],
        }
    else:
        payload = {
            "type": "view_submission",
            "team": {"id": "T0TEST"},
            "user": {"id": user},
            "api_app_id": "A0TEST",
            "trigger_id": "t.1",
            "token": "legacy",
            "view": {
                "id": "V0",
                "type": "modal",
                "callback_id": draw(st.sampled_from(["promotion.reject_reason"]) | st.text(max_size=20)),
                "private_metadata": draw(st.text(max_size=30)),
                "state": {
                    "values": {"reason": {"value": {"type": "plain_text_input", "value": draw(st.text(max_size=80))}}}
                },
            },
        }
    if draw(st.integers(0, 9)) == 0:
        payload = draw(json_values)  # a signed payload of the wrong shape
    return "application/x-www-form-urlencoded", urlencode({"payload": json.dumps(payload)})


# --- the properties -----------------------------------------------------------------------------------


def test_any_pipeline_input(live, no_crashes):
    @fuzz(5)
    @given(body=bodies, token=st.sampled_from([API_TOKEN, API_TOKEN, API_TOKEN, "wrong", None]))
    def one(body: bytes, token: str | None) -> None:
        before = row_counts(live)
        status, answer = post_event(live, body, token)
        check(live, status, answer, before, body[:200], "events")

    one()
    assert live.request("GET", "/healthz")[0] == 200
    report("events")


def report(route: str) -> None:
    seen = {status: n for (r, status), n in sorted(SEEN.items()) if r == route}
    print(
        f"\nfuzz {route}: {sum(seen.values())} inputs, answered {seen}; server errors: "
        f"{sum(n for status, n in seen.items() if status >= 500)}"
    )


authorize_fields = {
    "service": st.sampled_from(SERVICES) | text,
    "environment": st.sampled_from(ENVIRONMENTS) | text,
    "image_digest": st.just("sha256:" + "ab" * 32) | text,
    "promotion_id": st.sampled_from(["prm-0123456789", "prm-x"]) | text,
    "run_id": st.sampled_from(["1", "4242", "\u00b2", "1" * 30]) | st.integers() | text | json_values,
    "run_attempt": st.integers() | json_values,
    "repository": st.sampled_from(["acme/api-gateway", "acme/other", "../x"]) | text,
    "image_tag": st.sampled_from(TAGS) | text,
}


AUTHORIZE_VALID = {
    "service": st.sampled_from(SERVICES),
    "environment": st.sampled_from(ENVIRONMENTS),
    "image_digest": st.just("sha256:" + "ab" * 32),
    "promotion_id": st.sampled_from(["prm-0123456789", "prm-x"]),
    "run_id": st.sampled_from(["1", "4242", 7]),
}


@st.composite
def authorize_requests(draw: st.DrawFn) -> bytes:
    """Mostly well-formed requests with a few fields spoiled (so that many reach a decision), some of any
    shape, some not JSON."""
    body: Any = {key: draw(strategy) for key, strategy in AUTHORIZE_VALID.items()}
    for key in draw(st.sets(st.sampled_from(sorted(authorize_fields)), max_size=3)):
        body[key] = draw(authorize_fields[key])
    for key in draw(st.sets(st.sampled_from(sorted(AUTHORIZE_VALID)), max_size=1)):
        del body[key]
    if draw(st.integers(0, 9)) == 0:
        body = draw(json_values)
    return json.dumps(body).encode() if draw(st.integers(0, 9)) else draw(st.binary(max_size=100))


def test_any_authorize_request(live, no_crashes):
    """A deploy run asking whether it may deploy: any body is answered, never with a server error; a refusal
    of the request itself (400, 401, 413) writes nothing (a decision, 200 or 403, is audited)."""

    @fuzz(1)
    @given(body=authorize_requests(), token=st.sampled_from([API_TOKEN, API_TOKEN, "wrong", None]))
    def one(body: bytes, token: str | None) -> None:
        before = row_counts(live)
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        status, answer = live.request("POST", "/api/v1/deployments/authorize", body, headers)
        SEEN[("authorize", status)] += 1
        assert status < 500, (status, answer[:300], body[:200])
        if status not in (200, 403):
            assert row_counts(live) == before, ("a refused request wrote rows", status, body[:200])
        else:
            assert json.loads(answer)["authorized"] is (status == 200)

    one()
    assert live.request("GET", "/healthz")[0] == 200
    report("authorize")


def test_any_github_delivery(live, no_crashes):
    @fuzz(2)
    @given(delivery=webhooks())
    def one(delivery: tuple[bytes, dict[str, str]]) -> None:
        body, headers = delivery
        before = row_counts(live)
        status, answer = live.request("POST", "/github/webhook", body, headers)
        check(live, status, answer, before, (headers, body[:200]), "github")

    one()
    assert live.request("GET", "/healthz")[0] == 200
    report("github")


def test_any_signed_slack_request(live, no_crashes):
    @fuzz(3)
    @given(request=slack_requests())
    def one(request: tuple[str, str]) -> None:
        content_type, body = request
        before = row_counts(live)
        status, answer = live.request(
            "POST", "/slack/events", body.encode(), {**sign(body), "Content-Type": content_type}
        )
        check(live, status, answer, before, body[:300], "slack")

    one()
    time.sleep(1.0)  # listeners answer after the ack: let the last ones finish before looking at the logs
    assert live.request("GET", "/healthz")[0] == 200
    report("slack")


def test_the_published_openapi_description_is_the_served_one(live):
    from pathlib import Path

    from openapi_spec_validator import validate

    status, body = live.request("GET", "/api/v1/openapi.json")
    assert status == 200
    served = json.loads(body)
    validate(served)
    checked_in = json.loads((Path(__file__).parent.parent / "docs" / "openapi.json").read_text())
    assert served == checked_in, "docs/openapi.json is stale: python -m handlers.openapi > docs/openapi.json"
    assert set(served["components"]["schemas"]) >= {
        "ArtifactBuilt",
        "DeploymentFinished",
        "VerificationFinished",
        "ScanFinished",
        "SbomPublished",
        "Problem",
    }
