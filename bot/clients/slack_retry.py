"""Slack's rate limits: a burst of messages is answered 429 with Retry-After. What is posted after the ack
(the card, its thread, alerts, direct messages, digests) waits that out and is sent again rather than
dropped; what an acknowledgement waits on (the approvers' user groups, read before an approval is recorded)
or what must happen within three seconds (a modal, whose trigger id then expires) fails at once instead, to
its fallback, so no ack waits out a Retry-After."""

from __future__ import annotations

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler, async_default_handlers
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

RATE_LIMIT_RETRIES = 3  # a rate-limited message is sent again this many times, each after Retry-After
# the Web API methods promobot calls only after Slack has been acknowledged
AFTER_THE_ACK = frozenset(
    {
        "chat.postMessage",
        "chat.update",
        "chat.getPermalink",
        "views.publish",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    }
)


class PostedAfterTheAck(AsyncRateLimitErrorRetryHandler):
    """Retries a rate-limited call of a method in ``AFTER_THE_ACK``; any other fails at once."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        method = request.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return method in AFTER_THE_ACK and await super()._can_retry_async(
            state=state, request=request, response=response, error=error
        )


def retry_handlers() -> list[AsyncRetryHandler]:
    """slack_sdk's own (a broken connection is tried again), and rate limits as above."""
    return [*async_default_handlers(), PostedAfterTheAck(max_retry_count=RATE_LIMIT_RETRIES)]
