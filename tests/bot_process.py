"""A real `promobot serve` process for crash and replica tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.harness import API_TOKEN, BOT_TOKEN, GITHUB_TOKEN, SIGNING_SECRET, WEBHOOK_SECRET, free_port

ROOT = Path(__file__).resolve().parent.parent


class BotProcess:
    """``app_token`` runs Slack over Socket Mode (SLACK_APP_TOKEN set, no ``--http``); by default the process
    serves Slack over HTTP and never sees an app token."""

    def __init__(
        self,
        *,
        config_path: Path,
        database_url: str,
        slack,
        github,
        instance_id: str,
        log_path: Path,
        extra_env: dict | None = None,
        app_token: str | None = None,
        registry_host: str | None = None,
    ):
        self.port = free_port()
        self.registry_host = registry_host  # the OCI registry its config's images live in
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "PROMOBOT_CONFIG": str(config_path),
            "DATABASE_URL": database_url,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
            "GITHUB_TOKEN": GITHUB_TOKEN,
            "GITHUB_API_URL": github.api_url,
            "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PROMOBOT_API_TOKEN": API_TOKEN,
            "PROMOBOT_INSTANCE_ID": instance_id,
            "PROMOBOT_OUTBOX_INTERVAL": "0.2",
            "PROMOBOT_TRACKING_POLL_INTERVAL": "0.5",
            "PROMOBOT_RUN_LISTING_LAG": "5",
            **(extra_env or {}),
        }
        self.env.pop("SLACK_APP_TOKEN", None)
        self.socket_mode = app_token is not None
        if self.socket_mode:
            self.env["SLACK_APP_TOKEN"] = app_token
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> BotProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child process writes to it until stopped)
        mode = [] if self.socket_mode else ["--http"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", *mode, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"promobot exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"promobot did not become healthy in {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush; what is not in the database is lost."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""
