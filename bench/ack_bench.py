"""Acks under load: promobot and a bare slack-bolt app side by side, in one run, on this machine.

50 concurrent Slack clients send 2,000 signed slash commands (three in four `/status api-gateway`, one in
four `/promote api-gateway 7a3f9c2 --check`) to `promobot serve --http`, then the same to a bare Bolt app
that only acks and answers through response_url (bench/bare_bolt_app.py: the framework's ceiling here).
A second round sends the four /promote card actions (approve, reject, cancel, revoke). It prints, per
app and round, the ack latency (p50, p99, max, how many over Slack's 3 s) and how many commands per
second were completed (their answer reached response_url). Slack and GitHub are the local stand-ins,
answering at once.

    python bench/ack_bench.py [--database sqlite|postgres] [--commands 2000] [--clients 50] [--actions 1000]

Goals (issue 13): ack p99 ≤ 2 × the bare app's and none over 3 s; at least 150 /status and 50 --check
completed per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp

from tests.bot_process import BotProcess
from tests.fakes.github_api import FakeGitHub
from tests.fakes.slack_api import FakeSlack
from tests.harness import (
    BOT_TOKEN,
    CONFIG,
    GITHUB_TOKEN,
    RUN_NAME,
    SIGNING_SECRET,
    Clock,
    Harness,
    PostgresSchema,
    free_port,
    request_card,
    seed,
    sign,
)

TAG = "7a3f9c2"


@dataclass
class Round:
    """One app under one kind of load: every ack's latency, and when each answer reached response_url."""

    app: str
    load: str
    acks: list[float] = field(default_factory=list)
    late: int = 0  # acks over 3 s
    sent: dict[str, tuple[str, float]] = field(default_factory=dict)  # tag -> (kind, sent at)
    started: float = 0.0
    finished: float = 0.0

    def summary(self, slack: FakeSlack) -> str:
        acks = sorted(self.acks)
        done = slack.response_times()
        by_kind: dict[str, list[float]] = {}
        for tag, (kind, _) in self.sent.items():
            if tag in done:
                by_kind.setdefault(kind, []).append(done[tag])
        end = max((t for times in by_kind.values() for t in times), default=self.finished)
        wall = max(end - self.started, 1e-9)
        rates = ", ".join(
            f"{kind} {len(times) / wall:.0f}/s ({len(times)} done)" for kind, times in sorted(by_kind.items())
        )
        p = lambda q: acks[min(len(acks) - 1, int(q * len(acks)))] * 1000  # noqa: E731
        return (
            f"{self.app:9} {self.load:8} acks n={len(acks)} p50 {p(0.5):6.1f} ms  p99 {p(0.99):7.1f} ms  "
            f"max {acks[-1] * 1000:7.1f} ms  over 3 s: {self.late}  |  completed {rates}"
        )


def command_body(slack: FakeSlack, user: str, command: str, text: str, tag: str) -> str:
    return urlencode(
        {
            "token": "legacy",
            "team_id": "T0TEST",
            "team_domain": "acme",
            "channel_id": "C0DEPLOYS",
            "channel_name": "deploys",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0TEST",
            "is_enterprise_install": "false",
            "response_url": slack.response_url(tag),
            "trigger_id": f"{uuid.uuid4().hex}.trigger",
        }
    )


def action_body(slack: FakeSlack, user: str, card: dict, action_id: str, tag: str) -> str:
    element = next(
        el
        for b in card["blocks"]
        if b["type"] == "actions"
        for el in b["elements"]
        if el["action_id"] == "promotion.approve"
    )
    payload = {
        "type": "block_actions",
        "team": {"id": "T0TEST", "domain": "acme"},
        "user": {"id": user, "username": user.lower(), "team_id": "T0TEST"},
        "api_app_id": "A0TEST",
        "token": "legacy",
        "container": {"type": "message", "message_ts": card["ts"], "channel_id": "C0DEPLOYS", "is_ephemeral": False},
        "trigger_id": f"{uuid.uuid4().hex}.trigger",
        "channel": {"id": "C0DEPLOYS"},
        "message": {"type": "message", "ts": card["ts"], "blocks": card["blocks"]},
        "response_url": slack.response_url(tag),
        "actions": [
            {
                "action_id": action_id,
                "block_id": "decide",
                "text": {"type": "plain_text", "text": "x"},
                "value": element["value"],
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


async def load(url: str, slack: FakeSlack, rnd: Round, bodies: list[tuple[str, str, str]], clients: int) -> None:
    """Send every (kind, tag, body) with ``clients`` concurrent senders."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def client() -> None:
            while not queue.empty():
                kind, tag, body = queue.get_nowait()
                sent = time.time()
                rnd.sent[tag] = (kind, sent)
                async with session.post(f"{url}/slack/events", data=body.encode(), headers=sign(body)) as resp:
                    await resp.read()
                took = time.time() - sent
                rnd.acks.append(took)
                rnd.late += took > 3.0

        rnd.started = time.time()
        await asyncio.gather(*(client() for _ in range(clients)))
        rnd.finished = time.time()


async def settle(slack: FakeSlack, rnd: Round, timeout: float = 120.0) -> None:
    """Wait until every command's answer reached response_url (or the timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = slack.response_times()
        if all(tag in done for tag in rnd.sent):
            return
        await asyncio.sleep(0.2)


def start_bare(slack: FakeSlack, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": slack.api_url,
    }
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_bolt_app.py"), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the bare Bolt app did not start")


async def main(args: argparse.Namespace) -> None:
    slack = FakeSlack(bot_token=BOT_TOKEN).start()
    github = FakeGitHub(token=GITHUB_TOKEN).start()
    slack.usergroups = {"S0RELEASE": ["U0RM1", "U0RM2"]}
    for repo in ("acme/api-gateway", "acme/billing"):
        github.add_repo(repo)
        github.add_workflow(repo, "deploy.yml", run_name=RUN_NAME)
    schema = PostgresSchema() if args.database == "postgres" else None
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "promobot.yml"
        config.write_text(CONFIG)
        url = schema.url if schema else f"sqlite:///{tmp}/promobot.db"
        bot = BotProcess(
            config_path=config,
            database_url=url,
            slack=slack,
            github=github,
            instance_id="bench",
            log_path=Path(tmp) / "promobot.log",
            extra_env={"PROMOBOT_OUTBOX_INTERVAL": "2", "PROMOBOT_TRACKING_POLL_INTERVAL": "30"},
        ).start()
        bare_port = free_port()
        bare = start_bare(slack, bare_port)
        try:
            async with aiohttp.ClientSession() as session:
                h = Harness(bot.url, slack, github, None, session, Clock())
                await seed(h)
                await request_card(h)  # a pending production promotion, for the card actions
                card = h.cards()[-1]
            rng = random.Random(7)
            kinds = [("status", "/status", "api-gateway")] * 3 + [("check", "/promote", f"api-gateway {TAG} --check")]
            actions = ["promotion.approve", "promotion.reject", "promotion.cancel", "promotion.revoke"]
            results = []
            for app, base in (("bare bolt", f"http://127.0.0.1:{bare_port}"), ("promobot", bot.url)):
                commands = []
                for n in range(args.commands):
                    kind, command, text = rng.choice(kinds)
                    tag = f"{app[:4]}-c{n}"
                    commands.append((kind, tag, command_body(slack, "U0DEV", command, text, tag)))
                rnd = Round(app, "commands")
                await load(base, slack, rnd, commands, args.clients)
                await settle(slack, rnd)
                results.append(rnd)
                clicks = []
                for n in range(args.actions):
                    action = actions[n % 4]
                    tag = f"{app[:4]}-a{n}"
                    clicks.append((action.split(".")[1], tag, action_body(slack, "U0BENCH", card, action, tag)))
                rnd = Round(app, "actions")
                await load(base, slack, rnd, clicks, args.clients)
                await settle(slack, rnd)
                results.append(rnd)
            print(
                f"{args.commands} commands and {args.actions} card actions, {args.clients} concurrent clients, "
                f"promobot on {args.database} (ack: the HTTP answer to Slack's request)"
            )
            for rnd in results:
                print(rnd.summary(slack))
        finally:
            bare.terminate()
            bot.stop()
            slack.stop()
            github.stop()
            if schema:
                schema.drop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--actions", type=int, default=1000)
    asyncio.run(main(parser.parse_args()))
