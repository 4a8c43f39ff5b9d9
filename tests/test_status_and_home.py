"""`/status SERVICE`, `/status` for hundreds of services within Slack's limits, and App Home,
through signed requests against the real app."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session

from bot.engine.status import OverviewCell, OverviewRow
from handlers import blocks as B
from storage.models import Artifact, Deployment, EnvironmentLock, Verification
from tests.harness import CONFIG, TAG, all_text, header_text, open_home, request_card, seed
from tests.test_slack_experience import (
    OLD,
    assert_no_injection,
    assert_within_slack_limits,
    card_id,
    production_history,
    reply_to,
    section_with,
)

THAW = (datetime.now(UTC) + timedelta(days=2)).replace(
    hour=12, minute=0, second=0, microsecond=0, tzinfo=None
)  # Europe/Berlin wall time
FROZEN = CONFIG.replace(
    "    soak_time: 1h\n",
    "    soak_time: 1h\n    freezes:\n"
    f"      - {{start: '2020-01-01T00:00', end: '{THAW:%Y-%m-%dT%H:%M}', "
    "reason: '<!channel> year-end'}\n",
)


async def test_status_of_a_service_shows_each_environment_with_what_waits_and_what_blocks(harness):
    h = harness
    await production_history(h)
    await seed(h)
    await request_card(h)
    pid = card_id(h.cards()[-1])
    await reply_to(h, "U0LEAD", "/promote", "lock api-gateway production audit week")
    await reply_to(h, "U0LEAD", "/promote", f"hold api-gateway {OLD} memory leak")

    reply = await reply_to(h, "U0DEV", "/status", "api-gateway")
    assert reply["response_type"] == "ephemeral"
    assert reply["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "api-gateway: where it runs"},
    }
    assert_within_slack_limits(reply["blocks"])
    dev = section_with(reply, "• *dev*")
    assert dev.startswith(f"• *dev*: `{TAG}` `sha256:")
    assert "deployed 9 h ago" in dev and "verification passed 9 h ago (smoke passed)" in dev
    assert "already in staging" in dev
    staging = section_with(reply, "• *staging*")
    assert re.search(r"soak 7h( \d+m)? of 1h; eligible for production now", staging), staging
    production = section_with(reply, "• *production*")
    assert production.startswith(f"• *production*: `{OLD}` `sha256:")
    assert re.search(r":lock: locked by <@U0LEAD> since \d{4}-\d\d-\d\d \d\d:\d\d UTC: `audit week`", production)
    assert re.search(rf":raised_hand: `{OLD}` on hold by <@U0LEAD> since .* UTC: `memory leak`", production)
    assert (
        f"promotion `{pid}` of `{TAG}` by <@U0DEV>: waiting for approval (0 of 1; waiting for 1 more from "
        "<@U0LEAD>, <!subteam^S0RELEASE>); expires "
    ) in production
    assert "window" not in production  # no window or freeze configured


@pytest.mark.parametrize("config_text", [FROZEN])
async def test_status_shows_a_freeze_and_when_the_artifact_becomes_eligible(harness):
    h = harness
    await seed(h)
    reply = await reply_to(h, "U0DEV", "/status", "api-gateway")
    production = section_with(reply, "• *production*")
    thaw_utc = THAW.replace(tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)
    assert (
        f"window: :snowflake: frozen until {THAW:%Y-%m-%dT%H:%M}: `&lt;!channel&gt; year-end`; "
        f"opens {thaw_utc:%Y-%m-%d %H:%M} UTC"
    ) in production
    staging = section_with(reply, "• *staging*")
    assert f"eligible for production {thaw_utc:%Y-%m-%d %H:%M} UTC (when production's window opens)" in staging
    assert_no_injection([reply])


def many_services(count: int) -> str:
    services = "".join(
        f"""
  svc-{i:03d}-payments-ledger-reconciliation:
    repository: acme/svc-{i:03d}
    image: registry.example.com/acme/svc-{i:03d}
    workflow: deploy.yml
    channel: C0DEPLOYS"""
        for i in range(count)
    )
    return CONFIG[: CONFIG.index("services:")] + "services:" + services + "\n"


@pytest.mark.parametrize("config_text", [many_services(300)])
async def test_status_of_300_services_fits_one_message_within_slack_limits(harness):
    h = harness
    now = datetime.now(UTC)
    with Session(h.bot.engine) as s:
        for i, name in enumerate(sorted(h.bot.config.services)):
            for j, env in enumerate(("dev", "staging", "production")):
                tag = f"{i:03d}{j}" + "f" * 36  # 40-character tags
                at = now - timedelta(hours=10 - j)
                s.add(
                    Deployment(service=name, tag=tag, environment=env, status="success", finished_at=at, recorded_at=at)
                )
                s.add(
                    Verification(
                        service=name,
                        tag=tag,
                        environment=env,
                        result="failed" if i == 5 else "passed",
                        checks={},
                        finished_at=at + timedelta(minutes=5),
                        recorded_at=at,
                    )
                )
            if i == 7:
                s.add(
                    EnvironmentLock(
                        service=name, environment="production", locked_by="U0LEAD", reason="x", locked_at=now
                    )
                )
                s.add(
                    Artifact(
                        service=name,
                        tag=f"{i:03d}2" + "f" * 36,
                        digest="sha256:" + "0" * 64,
                        recorded_at=now,
                        hold_reason="rolled back",
                    )
                )
        s.commit()

    reply = await reply_to(h, "U0DEV", "/status", "")
    blocks = reply["blocks"]
    assert reply["text"] == "Status of 300 services"
    assert blocks[0]["text"]["text"] == "300 services at a glance"
    assert_within_slack_limits(blocks)
    assert 2 < len(blocks) <= 50
    text = all_text(reply)
    lines = [line for line in text.splitlines() if line.startswith("*svc-")]
    assert len(lines) == 300  # every service, one line each
    assert "f" * 36 not in text and "`0002ffffffff…`" not in text and "`0000fffffff…`✓" in text
    assert next(line for line in lines if line.startswith("*svc-005-")).count("✗") == 3
    assert next(line for line in lines if line.startswith("*svc-007-")).endswith("✓🔒✋")
    assert "2 need attention" in text


def test_the_overview_says_what_did_not_fit_when_there_are_thousands():
    cells = tuple(OverviewCell(env, "0123456789abcdef" * 2, "passed") for env in ("dev", "staging", "production"))
    rows = [OverviewRow(f"service-{i:05d}-with-a-rather-long-name", cells) for i in range(3000)]
    blocks = [b.to_dict() for b in B.overview(rows, datetime.now(UTC))]
    assert_within_slack_limits(blocks)
    assert len(blocks) == 50
    shown = sum(b["text"]["text"].count("\n") + 1 for b in blocks if b["type"] == "section")
    assert blocks[-1]["type"] == "context"
    assert blocks[-1]["elements"][0]["text"] == (
        f"…and {3000 - shown} more services. `/status SERVICE` shows one in full."
    )


def headers(view: dict) -> list[str]:
    return [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]


async def test_app_home_puts_what_waits_for_me_first_then_my_requests_then_every_service(harness):
    h = harness
    await seed(h)
    await request_card(h)
    pid = card_id(h.cards()[-1])

    for approver in ("U0LEAD", "U0RM2"):  # a listed user, and a member of the approver group
        view = await open_home(h, approver)
        assert view["type"] == "home"
        assert headers(view) == ["Waiting for my approval", "My requests", "Every service"]
        assert_within_slack_limits(view["blocks"], max_blocks=100)
        waiting = view["blocks"][1]["text"]["text"]
        assert f"*Promotion: api-gateway* `{TAG}` → *production* (`{pid}`)" in waiting
        assert "requested by <@U0DEV>" in waiting and "0 of 1" in waiting and "card in <#C0DEPLOYS>" in waiting
        assert "You have not requested anything yet" in all_text({"blocks": view["blocks"]})

    view = await open_home(h, "U0DEV")  # the requester: nothing to approve, one request
    text = all_text({"blocks": view["blocks"]})
    assert view["blocks"][1]["text"]["text"] == "Nothing waits for you. :tada:"
    assert f"`{pid}` api-gateway `{TAG}` → production: waiting for approval" in text
    grid = section_with({"blocks": view["blocks"]}, "*api-gateway*")
    assert f"dev `{TAG}`✓ · staging `{TAG}`✓ · production —⏳" in grid and "*billing*  dev — · staging —" in grid

    await h.user("U0LEAD").click(h.cards()[-1], "promotion.approve")
    await h.wait(lambda s: [u for u in s.updates("C0DEPLOYS") if "→ production · Deploying" in header_text(u)])
    view = await open_home(h, "U0RM2")  # decided: no longer waiting for anyone
    assert view["blocks"][1]["text"]["text"] == "Nothing waits for you. :tada:"
