"""Answers on response_url: a Slack endpoint that cannot be reached is a warning, never a crash."""

from __future__ import annotations

import logging
import socket

import pytest

from handlers.slack_respond import Responder


def refused_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.asyncio
async def test_an_unreachable_response_url_is_a_warning_without_the_url(caplog):
    caplog.set_level(logging.WARNING)
    url = f"http://127.0.0.1:{refused_port()}/commands/T0/secret-hook"
    responder = Responder(timeout=5)
    try:
        await responder.to({"response_url": url})(text="hello")
    finally:
        await responder.close()
    warnings = [r for r in caplog.records if r.name == "handlers.slack_respond"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "could not answer" in warnings[0].getMessage()
    assert "secret-hook" not in caplog.text
