"""Socket Mode end to end, as Slack does it: the real `promobot serve` process with SLACK_APP_TOKEN set
opens `apps.connections.open` on the local Slack stand-in, connects to the websocket it hands out,
and receives /promote and the Approve click as envelopes it must acknowledge over the socket.

The first test holds the stand-in to the protocol with slack_sdk's own aiohttp Socket Mode client.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.bot_process import BotProcess
from tests.fakes.slack_api import APP_ID, FakeSlack
from tests.harness import CONFIG, TAG, Clock, Harness, header_text, process_config, production_dispatches, seed

ACK_DEADLINE = 3.0  # Slack shows the user an error when an envelope is not acknowledged within 3 s


def command_payload(fake: FakeSlack, user: str, command: str, text: str, channel: str = "C0DEPLOYS") -> dict:
    """A slash command as a Socket Mode payload: the fields of the HTTP form body, as a JSON object."""
    tag = f"{command.strip('/')}-{uuid.uuid4().hex[:8]}"
    return {
        "token": "legacy-verification-token",
        "team_id": "T0TEST",
        "team_domain": "acme",
        "channel_id": channel,
        "channel_name": "deploys",
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": fake.response_url(tag),
        "trigger_id": f"{uuid.uuid4().hex}.trigger",
    }


def click_payload(fake: FakeSlack, user: str, card: dict, action_id: str) -> dict:
    """A button press on a message the bot posted, as the interactive payload Slack sends."""
    actions = next(b for b in card["blocks"] if b["type"] == "actions")
    element = next(el for el in actions["elements"] if el["action_id"] == action_id)
    return {
        "type": "block_actions",
        "team": {"id": "T0TEST", "domain": "acme"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0TEST"},
        "api_app_id": APP_ID,
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": card["ts"],
            "channel_id": card["channel"],
            "is_ephemeral": False,
        },
        "trigger_id": f"{uuid.uuid4().hex}.trigger",
        "channel": {"id": card["channel"], "name": "deploys"},
        "message": {"type": "message", "ts": card["ts"], "text": card.get("text", ""), "blocks": card["blocks"]},
        "response_url": fake.response_url(f"action-{uuid.uuid4().hex[:8]}"),
        "actions": [
            {
                "action_id": action_id,
                "block_id": actions["block_id"],
                "text": element["text"],
                "value": element["value"],
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def tag_of(response_url: str) -> str:
    return response_url.rsplit("/", 1)[1]


async def acked(fake: FakeSlack, envelope_id: str) -> dict:
    ack = (await fake.wait_for_async(lambda s: s.socket_acks(envelope_id), timeout=ACK_DEADLINE))[0]
    assert ack["latency"] < ACK_DEADLINE, ack
    return ack


# --- the stand-in against slack_sdk's Socket Mode client ---


async def test_stand_in_speaks_socket_mode_to_slack_sdk():
    with FakeSlack() as fake:
        web = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        with pytest.raises(SlackApiError) as err:  # a bot token cannot open a connection
            await web.apps_connections_open(app_token=fake.bot_token)
        assert err.value.response["error"] == "not_allowed_token_type"
        with pytest.raises(SlackApiError) as err:  # and the app token is good for nothing else
            await AsyncWebClient(token=fake.app_token, base_url=fake.api_url).auth_test()
        assert err.value.response["error"] == "not_allowed_token_type"

        messages: list[dict] = []
        requests: list[SocketModeRequest] = []

        async def on_message(client, message: dict, raw: str | None) -> None:
            messages.append(message)

        async def on_request(client, req: SocketModeRequest) -> None:
            requests.append(req)
            answer = {"text": "on it"} if req.accepts_response_payload else None
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id, payload=answer))

        client = SocketModeClient(app_token=fake.app_token, web_client=web, ping_interval=5)
        client.message_listeners.append(on_message)
        client.socket_mode_request_listeners.append(on_request)
        try:
            await client.connect()
            [conn] = await fake.wait_for_async(lambda s: s.socket_connections(live=True))
            [opened] = [c for c in fake.calls("apps.connections.open") if c["response"]["ok"]]
            url = opened["response"]["url"]
            assert url.startswith(fake.socket_url + "?ticket=") and f"app_id={APP_ID}" in url
            hello = (await fake.wait_for_async(lambda s: messages))[0]
            assert hello["type"] == "hello" and hello["connection_info"] == {"app_id": APP_ID}
            assert hello["num_connections"] == 1 and hello["debug_info"]["host"]
            # slack_sdk pings at once on a new connection and reads the pong as "alive"
            await fake.wait_for_async(lambda s: s.socket_connections()[0]["pings"] >= 1)
            await fake.wait_for_async(lambda s: client.last_ping_pong_time is not None)

            command = command_payload(fake, "U0DEV", "/promote", "help")
            eid = fake.socket_send("slash_commands", command)
            ack = await acked(fake, eid)
            assert ack["message"] == {"envelope_id": eid, "payload": {"text": "on it"}}
            assert ack["envelope_type"] == "slash_commands" and ack["connection"] == conn["id"]
            assert requests[0].type == "slash_commands" and requests[0].payload == command
            assert requests[0].accepts_response_payload is True

            eid = fake.socket_send("events_api", {"type": "event_callback", "event": {"type": "app_home_opened"}})
            assert (await acked(fake, eid))["payload"] is None  # events cannot carry a response
            assert requests[1].retry_attempt == 0 and requests[1].accepts_response_payload is False

            fake.socket_ping()  # Slack's servers ping too; the client answers
            await fake.wait_for_async(lambda s: s.socket_connections()[0]["pongs"] >= 1)

            # Slack asks for a refresh: the client opens a new connection with a new ticket
            fake.socket_disconnect("refresh_requested")
            await fake.wait_for_async(
                lambda s: (
                    [c for c in s.socket_connections(live=True) if c["id"] != conn["id"]]
                    and not [c for c in s.socket_connections(live=True) if c["id"] == conn["id"]]
                )
            )
            assert len([c for c in fake.calls("apps.connections.open") if c["response"]["ok"]]) == 2
            eid = fake.socket_send("interactive", {"type": "block_actions", "actions": []})
            assert (await acked(fake, eid))["connection"] != conn["id"]
            assert fake.socket_messages() == []

            async with aiohttp.ClientSession() as session:  # a ticket opens one connection only
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(url)
            assert refused.value.status == 401 and fake.socket_rejected()[0]["reason"]
        finally:
            await client.close()


# --- the real bot process ---


@pytest.fixture
def socket_bot(tmp_path, database_url, slack, github, image_registry):
    config = tmp_path / "promobot.yml"
    config.write_text(process_config(image_registry.host))
    bot = BotProcess(
        config_path=config,
        database_url=database_url,
        slack=slack,
        github=github,
        instance_id="socket-a",
        log_path=tmp_path / "socket-a.log",
        app_token=slack.app_token,
        registry_host=image_registry.host,
    )
    try:
        yield bot.start()
    finally:
        bot.stop()
        if bot.proc is not None and bot.proc.returncode not in (0, -15):
            print(bot.log())


@pytest.mark.slow
async def test_promote_and_approve_over_socket_mode(socket_bot, slack, github):
    [conn] = await slack.wait_for_async(lambda s: s.socket_connections(live=True), timeout=10)
    assert slack.calls("apps.connections.open")[0]["response"]["ok"]  # opened with the xapp- token
    await slack.wait_for_async(lambda s: s.socket_connections()[0]["pings"] >= 1)

    async with aiohttp.ClientSession() as session:
        h = Harness(socket_bot.url, slack, github, None, session, Clock(), registry_host=socket_bot.registry_host)
        status, health = await h.get("/healthz")
        assert status == 200 and health["status"] == "ok"  # the HTTP server still runs beside the socket
        build = await seed(h)  # through the pipeline API

        # /promote arrives as a slash_commands envelope: acknowledged in time, the card is posted
        command = command_payload(slack, "U0DEV", "/promote", f"api-gateway {TAG}")
        eid = slack.socket_send("slash_commands", command)
        ack = await acked(slack, eid)
        assert ack["connection"] == conn["id"] and ack["envelope_type"] == "slash_commands"
        card = (await h.wait(lambda s: h.cards()))[-1]
        assert "api-gateway → production" in header_text(card) and "Waiting for approval" in header_text(card)
        assert card in slack.messages("C0DEPLOYS")  # posted with chat.postMessage
        reply = (await h.wait(lambda s: s.responses(tag_of(command["response_url"]))))[0]
        assert "waiting for 1 approval" in reply["text"] and reply["response_type"] == "ephemeral"

        # an approver clicks Approve: an interactive envelope, acknowledged, and the workflow is dispatched
        eid = slack.socket_send("interactive", click_payload(slack, "U0LEAD", card, "promotion.approve"))
        await acked(slack, eid)
        dispatch = (await h.wait(lambda s: production_dispatches(h)))[0]
        assert dispatch["repo"] == "acme/api-gateway" and dispatch["workflow"] == "deploy.yml"
        assert dispatch["ref"] == "main"
        assert dispatch["inputs"] == {
            "environment": "production",
            "image_tag": TAG,
            "image_digest": build["digest"],
            "promotion_id": dispatch["inputs"]["promotion_id"],
        }
        assert dispatch["inputs"]["promotion_id"]

        # Slack asks the app to reconnect: the bot opens a new link and keeps answering on it
        slack.socket_disconnect("refresh_requested")
        [fresh] = await slack.wait_for_async(
            lambda s: [c for c in s.socket_connections(live=True) if c["id"] != conn["id"]], timeout=10
        )
        late = command_payload(slack, "U0RM1", "/promote", f"api-gateway {TAG}")
        eid = slack.socket_send("slash_commands", late, connection=fresh["id"])
        assert (await acked(slack, eid))["connection"] == fresh["id"]
        await h.wait(lambda s: s.responses(tag_of(late["response_url"])))

    assert len(production_dispatches(h)) == 1
    assert not [a for a in slack.socket_acks() if a["envelope_type"] is None]  # no ack for an unknown envelope


async def test_socket_mode_without_signing_secret_refuses_unsigned_http(database_url, slack, github):
    from aiohttp import web

    from bot.app import build
    from bot.config import parse_config
    from bot.server import make_web_app
    from tests.harness import free_port, settings_for

    bot = build(
        settings_for(database_url, slack, github, slack_signing_secret=None, slack_app_token=slack.app_token),
        parse_config(CONFIG),
    )
    runner = web.AppRunner(make_web_app(bot, background=False), shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        forged = command_payload(slack, "U0LEAD", "/status", "")
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/slack/events", data=forged) as resp:
                status = resp.status
        await asyncio.sleep(0.5)
        assert status in (401, 403, 404) and slack.responses(tag_of(forged["response_url"])) == []
    finally:
        await runner.cleanup()
        bot.engine.dispose()
