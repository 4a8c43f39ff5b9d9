"""Hostile and malformed requests against the real server: unauthenticated requests cost nothing, bad
shapes are the client's 400 (never a 500), and Slack's redelivery of an event is handled once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import aiohttp

from tests.harness import (
    API_TOKEN,
    TAG,
    WEBHOOK_SECRET,
    card_id,
    deployed,
    in_thread,
    promotion,
    recorded_dispatch,
    request_card,
    seed,
    sign,
    verified,
)

TEN_MB = 10 * 1024 * 1024
DEEP = "[" * 200_000 + "]" * 200_000  # JSON nested 200,000 deep


def deep_object(key: str) -> str:
    return '{"' + key + '": ' + DEEP + "}"


def github_headers(body: bytes, event: str = "workflow_run") -> dict[str, str]:
    digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={digest}",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": f"d-{time.time_ns()}",
        "Content-Type": "application/json",
    }


async def test_unsigned_ten_megabyte_posts_are_refused_before_they_are_read(harness):
    h = harness
    body = b"payload=" + b"x" * TEN_MB
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": str(int(time.time()))}

    async def post() -> tuple[int, dict]:
        async with h.session.post(f"{h.base_url}/slack/events", data=body, headers=headers) as resp:
            return resp.status, await resp.json()

    async def health() -> int:
        async with h.session.get(f"{h.base_url}/healthz") as resp:
            return resp.status

    answers = await asyncio.gather(*(post() for _ in range(8)), health())
    for status, answer in answers[:8]:
        assert status == 413 and "the limit is 1 MB" in answer["error"]
    assert answers[8] == 200

    async def chunks():  # no Content-Length: refused as soon as it grows past the limit
        for _ in range(40):
            yield b"x" * (1 << 18)

    async with h.session.post(f"{h.base_url}/slack/events", data=chunks(), headers=headers) as resp:
        assert resp.status == 413

    # a small unsigned request is refused by its signature, and nothing reached Bolt
    async with h.session.post(f"{h.base_url}/slack/events", data=b"command=/promote&text=x", headers=headers) as resp:
        assert resp.status == 401 and "signature" in (await resp.json())["error"]


async def test_deep_or_misshapen_json_is_a_400_on_every_route(harness):
    h = harness
    pipeline = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    for raw in (DEEP, "[1, 2, 3]", deep_object("type")):
        async with h.session.post(f"{h.base_url}/api/v1/events", data=raw, headers=pipeline) as resp:
            assert resp.status == 400, (raw[:20], await resp.text())
            assert (await resp.json())["error"] == "invalid event"

    authorize = f"{h.base_url}/api/v1/deployments/authorize"
    superscript = {
        "service": "api-gateway",
        "environment": "production",
        "image_digest": "sha256:" + "ab" * 32,
        "promotion_id": "prm-0123456789",
        "run_id": "\u00b2",  # str.isdigit() says yes; int() says no
    }
    for raw in ("[" * 10_000 + "]" * 10_000, "[1, 2, 3]", json.dumps(superscript)):
        async with h.session.post(authorize, data=raw, headers=pipeline) as resp:
            assert resp.status == 400, (raw[:20], await resp.text())
            assert (await resp.json())["error"] == "invalid request"
    async with h.session.post(authorize, data=b" " * (1 << 20), headers=pipeline) as resp:
        assert resp.status == 413 and "64 KB" in (await resp.json())["error"]

    for raw in (DEEP.encode(), b"[1, 2, 3]", deep_object("workflow_run").encode()):
        async with h.session.post(f"{h.base_url}/github/webhook", data=raw, headers=github_headers(raw)) as resp:
            assert resp.status == 400, (raw[:20], await resp.text())

    for raw in (DEEP, "[1, 2, 3]", deep_object("event")):
        headers = {**sign(raw), "Content-Type": "application/json"}
        async with h.session.post(f"{h.base_url}/slack/events", data=raw.encode(), headers=headers) as resp:
            assert resp.status == 400, (raw[:20], await resp.text())
    # a NUL character, which PostgreSQL cannot store, is refused on every route before anything is written
    nul_event = {**verified("api-gateway", TAG, "dev"), "event_id": "evt-\u0000"}
    async with h.session.post(f"{h.base_url}/api/v1/events", json=nul_event, headers=pipeline) as resp:
        assert resp.status == 400 and "NUL character" in str(await resp.json()), await resp.text()
    nul_command = urlencode({"command": "/rollback", "text": "api-gateway production \u0000", "user_id": "U0DEV"})
    async with h.session.post(f"{h.base_url}/slack/events", data=nul_command, headers=sign(nul_command)) as resp:
        assert resp.status == 400 and "NUL character" in (await resp.json())["error"]
    raw = json.dumps({"action": "completed", "workflow_run": {"name": "\u0000"}}).encode()
    async with h.session.post(f"{h.base_url}/github/webhook", data=raw, headers=github_headers(raw)) as resp:
        assert resp.status == 400 and "NUL character" in (await resp.json())["error"]

    form = urlencode({"payload": "[" * 100_000 + "]" * 100_000})  # url-encoded, 200,000 deep is over 1 MB
    async with h.session.post(f"{h.base_url}/slack/events", data=form.encode(), headers=sign(form)) as resp:
        assert resp.status == 400 and "nested deeper" in (await resp.json())["error"]
    async with h.session.get(f"{h.base_url}/healthz") as resp:
        assert resp.status == 200


async def test_an_event_slack_delivers_again_is_handled_once(harness):
    h = harness
    body = json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": "T0TEST",
            "api_app_id": "A0TEST",
            "type": "event_callback",
            "event_id": "Ev0RETRIED",
            "event_time": int(time.time()),
            "event": {
                "type": "app_home_opened",
                "user": "U0LEAD",
                "channel": "DU0LEAD",
                "tab": "home",
                "event_ts": f"{time.time():.6f}",
            },
        }
    )
    first = await h.post_slack(body, headers={**sign(body), "Content-Type": "application/json"})
    assert first.status == 200
    await h.wait(lambda s: s.calls("views.publish"))
    # Slack heard no ack in time and sends the same event again, on another connection
    again = {
        **sign(body),
        "Content-Type": "application/json",
        "X-Slack-Retry-Num": "1",
        "X-Slack-Retry-Reason": "http_timeout",
    }
    async with aiohttp.ClientSession() as other:
        async with other.post(f"{h.base_url}/slack/events", data=body.encode(), headers=again) as resp:
            assert resp.status == 200
    await asyncio.sleep(0.5)
    assert len(h.slack.calls("views.publish")) == 1


async def test_what_the_pipeline_reports_reaches_slack_escaped(harness):
    h = harness
    await seed(h)
    await request_card(h)
    card = h.cards()[-1]
    await h.user("U0LEAD").click(card, "promotion.approve")
    run_id = str((await recorded_dispatch(h))["run_id"])
    assert (await h.event(deployed("api-gateway", TAG, "production", run_id=run_id)))[0] == 202

    # a masked link in a URL is refused, and nothing is recorded
    for url in ("https://ci.example/run/1|Totally safe", "https://ci.example/<!channel>", "javascript:alert(1)"):
        status, answer = await h.event(verified("api-gateway", TAG, "production", result="failed", url=url))
        assert status == 400 and "url: not a plain http(s) URL" in answer["problems"][0], answer
    assert promotion(h, card_id(card)).status == "deployed"

    checks = {"<!channel> smoke": "failed", "<@U0LEAD|lead> e2e": "failed", "*bold* slo": "passed"}
    event = verified("api-gateway", TAG, "production", result="failed", checks=checks, url="https://ci.example/run/7")
    assert (await h.event(event))[0] == 202
    note = await in_thread(h, card, "Verification failed in production")
    assert "&lt;!channel&gt; smoke" in note and "&lt;@U0LEAD|lead&gt; e2e" in note
    assert "<!channel>" not in note and "<@U0LEAD" not in note
    assert "<https://ci.example/run/7|the report>" in note
    for m in h.slack.messages():
        assert "<!channel>" not in m["text"] and "<@U0LEAD|" not in m["text"]
