"""Dispatching against GitHub that fails for a while (502, 429 with Retry-After, an exhausted rate
limit) and then recovers; and dispatching as a GitHub App installation."""

from __future__ import annotations

import asyncio
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlmodel import Session, select

from storage.models import AuditEvent
from tests.harness import production_dispatches, request_card, seed


def _audit(h, pid: str) -> list[AuditEvent]:
    with Session(h.bot.engine) as s:
        return list(s.exec(select(AuditEvent).where(AuditEvent.promotion_id == pid).order_by(AuditEvent.seq)))


async def test_dispatch_retries_through_502_and_rate_limits_then_happens_once(harness, monkeypatch):
    h, gh = harness, harness.github
    monkeypatch.setattr(h.bot.service.outbox.delivery, "backoff_base", 0.1)  # GitHub's own headers set the longer waits
    await seed(h)
    await request_card(h)
    start = time.time()  # seeding dispatched staging already
    reset = int(start) + 12
    gh.fail_next(count=2, status=502, path_contains="/dispatches")
    gh.fail_next(count=1, status=429, path_contains="/dispatches", retry_after=1)
    gh.fail_next(count=1, status=403, path_contains="/dispatches", rate_limit_reset=reset)
    await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
    dispatch = (await h.wait(lambda s: production_dispatches(h), timeout=40))[0]
    pid = dispatch["inputs"]["promotion_id"]
    await asyncio.sleep(0.5)
    assert len(production_dispatches(h)) == 1

    posts = [
        r for r in gh.requests() if r["method"] == "POST" and r["path"].endswith("/dispatches") and r["at"] >= start
    ]
    assert [r["status"] for r in posts][:4] == [502, 502, 429, 403] and posts[4]["status"] < 300
    assert len(posts) == 5
    assert posts[3]["at"] - posts[2]["at"] >= 1.0  # Retry-After: 1
    assert posts[4]["at"] >= reset - 0.05  # X-RateLimit-Remaining: 0 until X-RateLimit-Reset
    # before every retry the runs list was asked whether the earlier attempt started a run after all
    for before, after in zip(posts, posts[1:]):
        assert any(
            r["method"] == "GET" and r["path"].endswith("/runs") and before["at"] < r["at"] < after["at"]
            for r in gh.requests()
        )

    events = _audit(h, pid)
    retries = [e.detail for e in events if e.action == "dispatch.retry_scheduled"]
    assert [r["attempt"] for r in retries] == [1, 2, 3, 4]
    assert "502" in retries[0]["error"] and "429" in retries[2]["error"] and "403" in retries[3]["error"]
    assert retries[0]["retry_in_seconds"] < 1 and retries[2]["retry_in_seconds"] == 1.0
    assert 1.0 < retries[3]["retry_in_seconds"] <= 12.0
    sent = [e.detail for e in events if e.action == "dispatch.sent"]
    assert len(sent) == 1 and sent[0]["attempts"] == 5 and sent[0]["run_id"] == str(dispatch["run_id"])


def _private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    "settings_overrides",
    [
        dict(
            github_token=None, github_app_id="4242", github_app_private_key=_private_key(), github_app_installation_id=1
        )
    ],
)
async def test_dispatch_as_a_github_app_installation(harness):
    h, gh = harness, harness.github
    assert not h.bot.settings.github_token and h.bot.settings.github_app_id == "4242"
    await seed(h)
    await request_card(h)
    await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
    dispatch = (await h.wait(lambda s: production_dispatches(h)))[0]
    # an installation token was issued for the app's JWT, then used for GitHub's REST API
    tokens = [r for r in gh.requests() if r["path"] == "/app/installations/1/access_tokens"]
    assert tokens and tokens[0]["status"] == 201
    assert dispatch["inputs"]["environment"] == "production"
    assert not [r for r in gh.requests() if r["status"] == 401]
