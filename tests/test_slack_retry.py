"""Slack's rate limits: a message posted after the ack is sent again after Retry-After; a lookup an ack
waits on fails at once, so the ack never waits out a Retry-After."""

from __future__ import annotations

import time

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.clients.slack_directory import SlackDirectory
from bot.clients.slack_retry import retry_handlers
from tests.harness import BOT_TOKEN


def client_for(slack) -> AsyncWebClient:
    return AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url, retry_handlers=retry_handlers())


async def test_a_rate_limited_message_is_sent_again_after_retry_after(slack):
    slack.fail_next("chat.postMessage", retry_after=1)
    started = time.monotonic()

    resp = await client_for(slack).chat_postMessage(channel="C0DEPLOYS", text="approved (3 of 20)")

    assert resp["ok"] and time.monotonic() - started >= 1.0
    assert [c["response"]["ok"] for c in slack.calls("chat.postMessage")] == [False, True]


async def test_a_rate_limited_approver_group_lookup_fails_at_once(slack):
    slack.fail_next("usergroups.users.list", retry_after=5)
    started = time.monotonic()

    with pytest.raises(SlackApiError, match="ratelimited"):
        await SlackDirectory(client_for(slack)).expand(["S0RELEASE"])

    assert time.monotonic() - started < 1.0  # not 5 s: an approval's ack waits on this lookup
    assert len(slack.calls("usergroups.users.list")) == 1


async def test_a_rate_limited_modal_is_not_sent_again_after_its_trigger_id_expired(slack):
    slack.fail_next("views.open", retry_after=3)

    with pytest.raises(SlackApiError, match="ratelimited"):
        await client_for(slack).views_open(trigger_id="t.1", view={"type": "modal", "title": {}, "blocks": []})

    assert len(slack.calls("views.open")) == 1
