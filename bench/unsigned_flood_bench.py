"""What unauthenticated requests cost: eight unsigned 10 MB form posts to /slack/events at once, while
/healthz is asked every 20 ms. Prints how long the posts took to be answered and the longest /healthz
wait (the event loop's stall), against the real server on SQLite with the local Slack and GitHub stand-ins.

    python bench/unsigned_flood_bench.py [--posts 8] [--megabytes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp
from aiohttp import web

from bot.app import build
from bot.config import Settings, parse_config
from bot.server import make_web_app
from tests.fakes.github_api import FakeGitHub
from tests.fakes.slack_api import FakeSlack

CONFIG = """
environments:
  - name: staging
  - name: production
    approval: manual
    approvers: [U0LEAD]
services:
  api-gateway:
    repository: acme/api-gateway
    image: registry.example.com/acme/api-gateway
    workflow: deploy.yml
    channel: C0DEPLOYS
"""


async def main(posts: int, megabytes: int) -> None:
    slack, github = FakeSlack(bot_token="xoxb-bench").start(), FakeGitHub(token="ghp_bench").start()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            promobot_config="(bench)",
            database_url=f"sqlite:///{tmp}/bench.db",
            slack_bot_token="xoxb-bench",
            slack_signing_secret="bench-secret",
            slack_api_url=slack.api_url,
            github_token="ghp_bench",
            github_api_url=github.api_url,
            promobot_api_token="bench-token",
        )
        bot = build(settings, parse_config(CONFIG))
        runner = web.AppRunner(make_web_app(bot, background=False), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        # many small form fields: what costs a parser most per byte
        body = (b"text=x&" * (megabytes * 1024 * 1024 // 7 + 1))[: megabytes * 1024 * 1024]
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(int(time.time())),
            "X-Slack-Signature": "v0=forged",
        }
        waits: list[float] = []
        done = asyncio.Event()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:

            async def health() -> None:
                while not done.is_set():
                    start = time.perf_counter()
                    async with session.get(f"{base}/healthz") as resp:
                        await resp.read()
                    waits.append(time.perf_counter() - start)
                    await asyncio.sleep(0.02)

            async def post() -> int:
                async with session.post(f"{base}/slack/events", data=body, headers=headers) as resp:
                    await resp.read()
                    return resp.status

            watcher = asyncio.create_task(health())
            await asyncio.sleep(0.2)
            start = time.perf_counter()
            statuses = await asyncio.gather(*(post() for _ in range(posts)))
            took = time.perf_counter() - start
            await asyncio.sleep(0.2)
            done.set()
            await watcher
        await runner.cleanup()
        bot.engine.dispose()
    slack.stop()
    github.stop()
    print(
        f"{posts} unsigned {megabytes} MB posts to /slack/events answered {sorted(set(statuses))} "
        f"in {took:.2f} s; /healthz asked {len(waits)} times, longest wait {max(waits) * 1000:.0f} ms "
        f"(median {sorted(waits)[len(waits) // 2] * 1000:.1f} ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=8)
    parser.add_argument("--megabytes", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.posts, args.megabytes))
