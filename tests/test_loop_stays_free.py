"""While a request waits for the database, promobot still acknowledges Slack: what reads or writes the
database runs off the event loop that acks (Slack gives three seconds, then shows the user
"operation_timeout")."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
import uuid
from urllib.parse import urlencode

from tests.harness import TAG, all_text, seed, sign

HELD = 3.0  # seconds the database's write lock is held by someone else


def hold_the_write_lock(engine, held: threading.Event, seconds: float) -> threading.Thread:
    """Another connection takes what every write of promobot's needs first (SQLite's write lock; on
    PostgreSQL the audit chain's head row) and keeps it for ``seconds``."""

    def hold() -> None:
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            if engine.dialect.name == "sqlite":
                cur.execute("BEGIN IMMEDIATE")
            else:
                cur.execute("SELECT seq FROM audithead WHERE id = 1 FOR UPDATE")
            held.set()
            time.sleep(seconds)
            raw.rollback()
        finally:
            raw.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def status_ack_seconds(base_url: str, slack) -> float:
    """A signed ``/status api-gateway`` sent from outside promobot's event loop: seconds until Slack has
    its acknowledgement."""
    tag = f"status-{uuid.uuid4().hex[:8]}"
    body = urlencode(
        {
            "team_id": "T0TEST",
            "channel_id": "C0DEPLOYS",
            "user_id": "U0DEV",
            "user_name": "u0dev",
            "command": "/status",
            "text": "api-gateway",
            "api_app_id": "A0TEST",
            "response_url": slack.response_url(tag),
            "trigger_id": f"{uuid.uuid4().hex}.trigger",
        }
    )
    request = urllib.request.Request(f"{base_url}/slack/events", data=body.encode(), headers=sign(body))
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as resp:
        resp.read()
        assert resp.status == 200
    return time.monotonic() - started


async def test_a_promote_waiting_for_the_database_leaves_slack_acknowledged(harness):
    h = harness
    await seed(h)
    dev = h.user("U0DEV")
    held = threading.Event()
    holder = hold_the_write_lock(h.bot.engine, held, HELD)
    assert await asyncio.to_thread(held.wait, 5)
    promoted = threading.Event()
    acks: list[float] = []

    def someone_else_asks() -> None:  # from outside promobot's event loop, whatever it is doing
        promoted.wait(5)
        time.sleep(0.5)  # the request's gates answer at once; by now it waits for the write lock
        acks.append(status_ack_seconds(h.base_url, h.slack))

    asker = threading.Thread(target=someone_else_asks, daemon=True)
    asker.start()
    assert (await dev.command("/promote", f"api-gateway {TAG}")).status == 200
    promoted.set()
    await asyncio.to_thread(asker.join, HELD + 10)

    assert acks and acks[0] < 1.0, f"/status was acknowledged after {acks[0]:.1f} s, behind a write that waited"
    await asyncio.to_thread(holder.join, HELD + 5)
    reply = (await h.wait(lambda s: dev.replies(), timeout=15))[0]["text"]
    assert "Requested" in reply, reply
    assert any("api-gateway" in all_text(c) for c in h.cards())
