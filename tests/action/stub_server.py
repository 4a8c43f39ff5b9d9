"""A scripted stand-in for promobot, for testing promobot.sh without GitHub or the bot.

    python3 stub_server.py DIR

Writes DIR/port once listening. Each request is recorded as one JSON line in
DIR/requests.jsonl (method, path, headers, raw body) and answered with line N of DIR/plan,
N being the number of requests already recorded (``STATUS [RETRY_AFTER] BODY``; the last
line repeats). Tests reset a case by rewriting plan and truncating requests.jsonl.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DIR = Path(sys.argv[1])
LOCK = threading.Lock()


def next_answer(seen: int) -> tuple[int, str | None, str]:
    """The answer for the request after ``seen`` recorded ones (the tests reset both files)."""
    lines = [ln for ln in (DIR / "plan").read_text().splitlines() if ln.strip()]
    parts = lines[min(seen, len(lines) - 1)].split(" ", 2)
    status = int(parts[0])
    if len(parts) > 1 and parts[1].isdigit():
        return status, parts[1], parts[2] if len(parts) > 2 else ""
    return status, None, " ".join(parts[1:])


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        record = {
            "method": "POST",
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", errors="replace"),
        }
        log = DIR / "requests.jsonl"
        with LOCK:
            seen = len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0
            with open(log, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        status, retry_after, answer = next_answer(seen)
        payload = answer.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if retry_after:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
(DIR / "port").write_text(str(server.server_address[1]))
server.serve_forever()
