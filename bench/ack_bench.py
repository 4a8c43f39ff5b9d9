"""Acks under load: promobot and a bare slack-bolt app side by side, in one run, on this machine.

A bare Bolt app that only acks and answers through response_url (bench/bare_bolt_app.py: the
framework's ceiling here), then `promobot serve --http`, each get the same rounds from 50 concurrent
Slack clients: 2,000 signed slash commands mixed (three in four `/status api-gateway`, one in four
`/promote api-gateway 7a3f9c2 --check`), 1,000 `/status` alone, 500 `--check` alone, and 1,000 card
actions by the people who would click them: approvals that are recorded (before the ack, on pending
production promotions of 14 services that need 20 approvals each, so none completes), rejects that open
the reason modal, revokes of those approvals, and cancels by someone who did not request the promotion
(refused). It prints, per app and round, the ack latency (p50, p99,
max, how many over Slack's 3 s) and how many commands per second were completed (their answer reached
response_url; a reject's modal opened; an approval is complete at its ack, recorded before it), and
promobot's first answer of each kind. Slack, GitHub and the OCI registry (a real
docker-registry) answer at once.

    python bench/ack_bench.py [--database sqlite|postgres] [--commands 2000] [--clients 50] [--actions 1000]
                              [--profile FILE [--py-spy PATH]]

With --profile, py-spy samples promobot's process through its rounds; bench/profile_summary.py FILE
says where the time went.

Goals (issue 13): ack p99 ≤ 2 × the bare app's and none over 3 s; at least 150 /status and 50 --check
completed per second.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
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
    config_on,
    free_port,
    header_text,
    request_card,
    seed,
    sign,
)
from tests.oci_registry import start_registry

TAG = "7a3f9c2"
APPROVERS = [f"U0A{n:02d}" for n in range(1, 20)]  # the release group: 19 approvers, 20 approvals needed
REQUIRED = 20


@dataclass
class Round:
    """One app under one kind of load: every ack's latency, and when each answer reached response_url."""

    app: str
    load: str
    acks: list[float] = field(default_factory=list)
    kind_acks: dict[str, list[float]] = field(default_factory=dict)  # kind -> its acks' latencies
    late: int = 0  # acks over 3 s
    sent: dict[str, tuple[str, float]] = field(default_factory=dict)  # tag -> (kind, sent at)
    acked: dict[str, float] = field(default_factory=dict)  # tag -> when its ack arrived
    done_at_ack: frozenset[str] = frozenset()  # kinds complete at their ack (an approval is recorded before it)
    started: float = 0.0
    finished: float = 0.0
    cpu: float = 0.0  # CPU seconds the app's process used for the round (user + system)

    def completed(self, slack: FakeSlack) -> dict[str, float]:
        """tag -> when its work was done: its answer reached response_url, its modal opened, or (kinds in
        ``done_at_ack``) its ack arrived."""
        done = dict(slack.response_times())
        for call in slack.calls("views.open"):
            done.setdefault(call["params"].get("trigger_id", "").removesuffix(".trigger"), call["at"])
        for tag, (kind, _) in self.sent.items():
            if kind in self.done_at_ack and tag in self.acked:
                done.setdefault(tag, self.acked[tag])
        return done

    def summary(self, slack: FakeSlack) -> str:
        acks = sorted(self.acks)
        done = self.completed(slack)
        by_kind: dict[str, list[float]] = {}
        for tag, (kind, _) in self.sent.items():
            if tag in done:
                by_kind.setdefault(kind, []).append(done[tag])
        end = max((t for times in by_kind.values() for t in times), default=self.finished)
        wall = max(end - self.started, 1e-9)
        rates = ", ".join(
            f"{kind} {len(times) / wall:.0f}/s ({len(times)} done)" for kind, times in sorted(by_kind.items())
        )
        p = lambda q: _percentile(acks, q)  # noqa: E731
        kinds = ""
        if len(self.kind_acks) > 1:  # each kind's own p99, where a round mixes them
            kinds = "  |  ack p99 " + ", ".join(
                f"{kind} {_percentile(sorted(times), 0.99):.0f} ms" for kind, times in sorted(self.kind_acks.items())
            )
        return (
            f"{self.app:9} {self.load:7} acks n={len(acks)} p50 {p(0.5):6.1f} ms  p99 {p(0.99):7.1f} ms  "
            f"max {acks[-1] * 1000:7.1f} ms  over 3 s: {self.late}  |  CPU {1000 * self.cpu / len(acks):4.1f} ms each  |  "
            f"completed {rates}{kinds}"
        )


def _percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted latencies in seconds, in milliseconds."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


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
    """A click on ``card``'s ``action_id`` button by ``user``; its trigger id names ``tag``."""
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
        "trigger_id": f"{tag}.trigger",
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


def bench_config(registry_host: str, services: list[str]) -> str:
    """The tests' configuration for a bot process (no soak in production: a process keeps its own clock),
    production needing 20 approvals, and the bench services beside api-gateway and billing."""
    extra = "".join(
        f"  {name}:\n    repository: acme/{name}\n    image: registry.example.com/acme/{name}\n"
        "    workflow: deploy.yml\n    ref: main\n    channel: C0DEPLOYS\n"
        for name in services
    )
    text = CONFIG.replace("soak_time: 1h", "soak_time: 0s").replace(
        "required_approvals: 1", f"required_approvals: {REQUIRED}"
    )
    return config_on(registry_host, text + extra)


def action_clicks(slack: FakeSlack, cards: list[dict], count: int):
    """``count`` card clicks, a quarter of each kind, as (kind, tag, body) for an app named by a prefix. First
    approvals (each a new approver on a card: every one is recorded) mixed with rejects by approvers (each
    opens the reason modal); then revokes of those approvals mixed with cancels by someone who did not
    request the promotion (refused)."""
    quarter = count // 4
    pairs = [(cards[k % len(cards)], APPROVERS[k // len(cards)]) for k in range(quarter)]

    def clicks(prefix: str) -> list[tuple[str, str, str]]:
        out = []
        for first, second in (("approve", "reject"), ("cancel", "revoke")):
            for k, (card, approver) in enumerate(pairs):
                for kind in (first, second):
                    user = "U0BENCH" if kind == "cancel" else approver
                    tag = f"{prefix}-{kind}-{k}"
                    out.append((kind, tag, action_body(slack, user, card, f"promotion.{kind}", tag)))
        return out

    return clicks


def click_outcomes(slack: FakeSlack) -> str:
    """What promobot made of the clicks, from what Slack saw: approvals answered (a recorded approval is
    not; a refused one is), reject modals opened, and the answers to revokes and cancels, by their words."""
    opened = sum(1 for c in slack.calls("views.open") if c["params"].get("trigger_id", "").startswith("prom-"))

    def answers(kind: str) -> dict[str, int]:
        counted: dict[str, int] = {}
        for tag in slack.response_times():
            if tag.startswith(f"prom-{kind}-"):
                text = (slack.responses(tag) or [{}])[0].get("text", "")
                key = text.split("`")[0].strip()[:60]
                counted[key] = counted.get(key, 0) + 1
        return counted

    refused_approvals = sum(answers("approve").values())
    return (
        f"promobot's clicks: approvals answered with a refusal {refused_approvals}, reject modals opened {opened}, "
        f"revoke answers {answers('revoke')}, cancel answers {answers('cancel')}; "
        f"cards redrawn {len(slack.calls('chat.update'))} times, thread notes {len(slack.calls('chat.postMessage'))}"
    )


async def load(url: str, slack: FakeSlack, rnd: Round, bodies: list[tuple[str, str, str]], clients: int) -> None:
    """Send every (kind, tag, body) with ``clients`` concurrent senders. This process's garbage collector
    waits meanwhile: its full passes over what FakeSlack records (every call, cards included) stopped every
    client, and the Slack stand-in, for 67-126 ms in one run, the later rounds longest; the app measured
    last (promobot) paid most."""
    gc.collect()
    gc.disable()
    try:
        await _load(url, slack, rnd, bodies, clients)
    finally:
        gc.enable()


async def _load(url: str, slack: FakeSlack, rnd: Round, bodies: list[tuple[str, str, str]], clients: int) -> None:
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
                acked = time.time()
                took = acked - sent
                rnd.acked[tag] = acked
                rnd.acks.append(took)
                rnd.kind_acks.setdefault(kind, []).append(took)
                rnd.late += took > 3.0

        rnd.started = time.time()
        await asyncio.gather(*(client() for _ in range(clients)))
        rnd.finished = time.time()


async def settle(slack: FakeSlack, rnd: Round, timeout: float = 120.0) -> None:
    """Wait until every command's answer reached response_url (or the timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = rnd.completed(slack)
        if all(tag in done for tag in rnd.sent):
            return
        await asyncio.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    slack.usergroups = {"S0RELEASE": APPROVERS}
    cards_needed = -(-(args.actions // 4) // len(APPROVERS))  # every approval click a new (card, approver)
    services = [f"svc-{n:02d}" for n in range(1, cards_needed + 1)]
    for repo in ["acme/api-gateway", "acme/billing"] + [f"acme/{name}" for name in services]:
        github.add_repo(repo)
        github.add_workflow(repo, "deploy.yml", run_name=RUN_NAME)
    schema = PostgresSchema() if args.database == "postgres" else None
    with tempfile.TemporaryDirectory() as tmp:
        registry = start_registry(Path(tmp) / "images")  # the images the gates read, answering at once
        config = Path(tmp) / "promobot.yml"
        config.write_text(bench_config(registry.host, services))
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
                h = Harness(bot.url, slack, github, None, session, Clock(), registry_host=registry.host)
                await seed(h)
                await request_card(h)  # a pending production promotion beside api-gateway's /status
                cards = []  # a pending production promotion of each bench service, for the card actions
                for name in services:
                    await seed(h, service=name)
                    await request_card(h, text=f"{name} {TAG}")
                    cards.append(next(c for c in reversed(h.cards()) if name in header_text(c)))
            rng = random.Random(7)
            status = ("status", "/status", "api-gateway")
            check = ("check", "/promote", f"api-gateway {TAG} --check")
            loads = {  # round: the commands it sends, drawn from these (three in four /status in the mix)
                "mixed": [status] * 3 + [check],
                "status": [status],
                "check": [check],
            }
            sizes = {"mixed": args.commands, "status": args.commands // 2, "check": args.commands // 4}
            clicks_sent = action_clicks(slack, cards, args.actions)
            results = []
            assert bot.proc is not None
            for app, base, pid in (
                ("bare bolt", f"http://127.0.0.1:{bare_port}", bare.pid),
                ("promobot", bot.url, bot.proc.pid),
            ):
                profiler = None
                if app == "promobot" and args.profile:  # py-spy samples promobot's process while it is loaded
                    assert bot.proc is not None
                    profiler = subprocess.Popen(
                        [
                            args.py_spy,
                            "record",
                            "--pid",
                            str(bot.proc.pid),
                            "--format",
                            "raw",
                            "-r",
                            "200",
                            "--threads",
                            "--gil" if args.profile_mode == "gil" else "--idle",
                        ]
                        + ["--nonblocking", "-o", args.profile],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    await asyncio.sleep(1.0)
                for name, kinds in loads.items():
                    if name not in args.rounds:
                        continue
                    commands = []
                    for n in range(sizes[name]):
                        kind, command, text = rng.choice(kinds)
                        tag = f"{app[:4]}-{name}-{n}"
                        commands.append((kind, tag, command_body(slack, "U0DEV", command, text, tag)))
                    rnd = Round(app, name)
                    before = cpu_seconds(pid)
                    await load(base, slack, rnd, commands, args.clients)
                    await settle(slack, rnd)
                    rnd.cpu = cpu_seconds(pid) - before
                    results.append(rnd)
                clicks = clicks_sent(app[:4]) if "actions" in args.rounds else []
                if clicks:
                    rnd = Round(app, "actions", done_at_ack=frozenset({"approve"}))
                    before = cpu_seconds(pid)
                    await load(base, slack, rnd, clicks, args.clients)
                    await settle(slack, rnd)
                    rnd.cpu = cpu_seconds(pid) - before
                    results.append(rnd)
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)
                    profiler.wait(30)
            print(
                f"{args.commands} mixed commands, then {sizes['status']} /status and {sizes['check']} --check alone, "
                f"then {args.actions} card actions; {args.clients} concurrent clients; promobot on {args.database} "
                "(ack: the HTTP answer to Slack's request; completed: its answer reached response_url)"
            )
            for rnd in results:
                print(rnd.summary(slack))
            for kind, tag in (("/status", "prom-status-0"), ("--check", "prom-check-0")):
                answer = (slack.responses(tag) or [{}])[0].get("text", "(no answer)")
                print(f"promobot's answer to {kind}: {answer[:150]!r}")
            if "actions" in args.rounds:
                print(click_outcomes(slack))
        finally:
            bare.terminate()
            bot.stop()
            registry.stop()
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
    parser.add_argument(
        "--rounds",
        nargs="+",
        default=["mixed", "status", "check", "actions"],
        choices=["mixed", "status", "check", "actions"],
        help="which rounds to run (default: all)",
    )
    parser.add_argument("--profile", help="write a py-spy profile (collapsed stacks) of promobot under load here")
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy executable (pip install py-spy)")
    parser.add_argument(
        "--profile-mode",
        choices=["gil", "wall"],
        default="gil",
        help="gil: where the interpreter's lock is held (CPU); wall: where each thread is, waiting included",
    )
    asyncio.run(main(parser.parse_args()))
