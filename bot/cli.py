"""The `promobot` command. Settings and configuration are built here, never at import."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bot.config import ConfigError, Settings, load_config

log = logging.getLogger("promobot")

EXIT_OK, EXIT_BLOCKED, EXIT_ERROR = 0, 1, 2


def _settings() -> Settings:
    return Settings()


def _config(settings: Settings):
    return load_config(settings.promobot_config)


def cmd_config_validate(args: argparse.Namespace) -> int:
    settings = _settings()
    path = args.file or settings.promobot_config
    config = load_config(path)
    print(
        f"{path}: valid — {len(config.environments)} environments "
        f"({' → '.join(config.environment_names)}), {len(config.services)} services, "
        f"{len(config.digests)} digests"
    )
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from bot.app import open_database
    from storage import migrate
    from storage.db import redact_url

    settings = _settings()
    engine = open_database(settings)
    print(f"{redact_url(settings.database_url)}: schema at revision {migrate.current(engine)}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.app import build
    from bot.server import serve
    from storage.db import redact_url

    settings = _settings()
    config = _config(settings)
    if settings.slack_bot_token is None:
        print(
            "SLACK_BOT_TOKEN is not set: promobot needs a Slack app to serve. To try it without Slack, "
            "run `promobot shell`.",
            file=sys.stderr,
        )
        return EXIT_ERROR
    socket_mode = settings.slack_app_token is not None and not args.http
    if not socket_mode and not settings.secret("slack_signing_secret"):
        print("SLACK_SIGNING_SECRET is not set: Slack over HTTP needs it to verify every request.", file=sys.stderr)
        return EXIT_ERROR
    bot = build(settings, config)
    print(
        f"promobot: {len(config.services)} services, database {redact_url(settings.database_url)}, "
        f"dispatch {'dry run (no GitHub credentials)' if bot.service.dispatcher.dry_run else 'GitHub'}, "
        f"Slack over {'Socket Mode' if socket_mode else 'HTTP /slack/events'}, port {args.port}",
        flush=True,
    )
    try:
        asyncio.run(serve(bot, port=args.port, host=args.host, socket_mode=socket_mode))
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def cmd_shell(args: argparse.Namespace) -> int:
    from bot.shell import run_shell

    settings = _settings()
    config = _config(settings)
    groups = {}
    for g in args.group or []:
        name, _, members = g.partition("=")
        groups[name] = [m for m in members.split(",") if m]
    return asyncio.run(run_shell(settings, config, user=args.user, groups=groups, demo=args.demo, script=args.script))


def cmd_check(args: argparse.Namespace) -> int:
    from bot.app import build
    from bot.engine.errors import UserError
    from bot.shell import SilentNotifier

    settings = _settings()
    config = _config(settings)
    bot = build(settings, config, notifier=SilentNotifier(), with_slack=False)
    try:
        report = asyncio.run(bot.service.check(args.service, args.tag, args.env, expedite_reason=args.expedite))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        verdict = "ELIGIBLE" if report.eligible else "BLOCKED"
        how = f" (EXPEDITED from {report.source_environment}: {report.expedite.reason})" if report.expedite else ""
        print(f"{report.service} {report.tag} → {report.target_environment}: {verdict}{how}")
        for r in report.results:
            mark = {"passed": "ok  ", "failed": "FAIL", "errored": "ERR ", "off": "OFF ", "skipped": "SKIP"}[
                r.status.value
            ]
            print(f"  [{mark}] {r.title}: {r.reason}")
            if r.blocks and r.next_step:
                print(f"         next: {r.next_step}")
    if report.eligible:
        return EXIT_OK
    return EXIT_ERROR if report.errored and all(r.status.value != "failed" for r in report.results) else EXIT_BLOCKED


def _report_event(args: argparse.Namespace, files: dict[str, str] | None = None) -> dict[str, Any]:
    """The event ``promobot report`` sends; ``files`` learns which option each report came from.
    A file that is not JSON raises BadFile naming it."""
    from handlers.pipeline_events import BadFile, read_json_file

    event: dict[str, Any] = {"type": args.type}
    extra = list(args.fields)
    checks: dict[str, str] = {}
    while extra:
        key = extra.pop(0)
        if not key.startswith("--") or not extra:
            raise SystemExit(f"error: expected --FIELD VALUE pairs, got {key!r}")
        name, value = key[2:].replace("-", "_"), extra.pop(0)
        if name in ("url", "retries"):  # options given after the fields
            setattr(args, name, int(value) if name == "retries" else value)
        elif name == "check":
            k, _, v = value.partition("=")
            checks[k] = v
        elif name in ("report_file", "sbom_file", "file"):
            field = "report" if args.type == "scan.finished" else "sbom"
            option = key.split("=", 1)[0]
            try:
                event[field] = read_json_file(value, field)
            except BadFile as exc:
                raise BadFile(f"{option} {exc}") from None
            if files is not None:
                files[field] = f"{option} {value}"
        else:
            event[name] = value
    if checks:
        event["checks"] = checks
    for name in ("built_at", "finished_at"):
        # resolved once, here: every retry then sends the same bytes (the bot would read "now" as its own time)
        if isinstance(event.get(name), str) and event[name].strip().lower() == "now":
            event[name] = datetime.now(UTC).isoformat(timespec="seconds")
    event.setdefault("event_id", str(uuid.uuid4()))
    return event


def cmd_report(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from handlers.pipeline_events import BadEvent, BadFile, check_report, validate_event

    settings = _settings()
    files: dict[str, str] = {}
    try:
        event = _report_event(args, files)
        check_report(validate_event(event), files)  # a report the bot cannot read is refused here, by file name
    except BadEvent as exc:
        print("error: invalid event:\n" + "\n".join(f"  {p}" for p in exc.problems), file=sys.stderr)
        return EXIT_BLOCKED
    except BadFile as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BLOCKED
    url = (args.url or settings.promobot_url).rstrip("/") + "/api/v1/events"
    token = settings.secret("promobot_api_token")
    if not token:
        print("error: PROMOBOT_API_TOKEN is not set", file=sys.stderr)
        return EXIT_ERROR
    data = json.dumps(event, default=str).encode()
    # The same event_id on every try: a resend after a lost answer is harmless.
    for attempt in range(1, args.retries + 2):
        request = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                print(f"{resp.status} {resp.read().decode()}")
                return EXIT_OK
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            if exc.code < 500 and exc.code != 429:  # a refusal: the same event would be refused again
                print(f"error: {exc.code} {body}", file=sys.stderr)
                return EXIT_BLOCKED
            problem = f"{exc.code} {body}"
            wait = exc.headers.get("Retry-After", "") if exc.headers else ""
        except (urllib.error.URLError, OSError) as exc:
            problem = f"cannot reach {url}: {getattr(exc, 'reason', exc)}"
            wait = ""
        if attempt <= args.retries:
            print(f"attempt {attempt} failed ({problem}); retrying", file=sys.stderr)
            time.sleep(min(60, max(2**attempt, int(wait) if wait.isdigit() else 0)))
    print(f"error: {problem}", file=sys.stderr)
    return EXIT_ERROR


def cmd_audit(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from bot.app import open_database
    from bot.engine.records import export
    from storage import audit
    from storage.models import AuditHead

    settings = _settings()
    engine = open_database(settings)
    with Session(engine) as s:
        if args.action == "verify":
            mode = audit.ChainMode()
            problem = audit.verify(s, mode)
            if problem:
                print(f"audit chain BROKEN at {problem}")
                return EXIT_ERROR if "set PROMOBOT_AUDIT_KEY" in problem.problem else EXIT_BLOCKED
            head = s.get(AuditHead, 1)
            print(f"audit chain intact: {head.seq if head else 0} events verified; {mode}")
            return EXIT_OK
        since = datetime.fromisoformat(args.since).replace(tzinfo=UTC) if args.since else None
        for chunk in export(s, since=since, fmt=args.format):
            sys.stdout.write(chunk)
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace) -> int:
    import dataclasses
    from datetime import timedelta

    from sqlmodel import Session

    from bot.app import open_database
    from storage import metrics
    from storage.metrics.table import format_table

    settings = _settings()
    config = _config(settings)
    engine = open_database(settings)
    if args.service and args.service not in config.services:
        print(f"error: unknown service {args.service!r}", file=sys.stderr)
        return EXIT_ERROR
    end = datetime.now(UTC)
    with Session(engine) as s:
        report = metrics.compute(
            s,
            start=end - timedelta(days=args.days),
            end=end,
            services=[args.service] if args.service else None,
            production=config.environment_names[-1],
        )
    if args.json:
        print(json.dumps(dataclasses.asdict(report), default=str, indent=2))
    else:
        print(format_table(report))
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="promobot", description="Safe, visible release promotion from Slack.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the bot (Socket Mode when SLACK_APP_TOKEN is set, else HTTP)")
    s.add_argument("--http", action="store_true", help="force HTTP mode even with SLACK_APP_TOKEN")
    s.add_argument("--port", type=int, default=3000)
    s.add_argument("--host", default="0.0.0.0")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("shell", help="try the bot in a terminal: type slash commands, press buttons by number")
    s.add_argument("--user", default="U0YOU", help="the Slack user id you act as (change with `as U…`)")
    s.add_argument("--group", action="append", help="a user group's members: S0GROUP=U1,U2")
    s.add_argument("--demo", action="store_true", help="record a sample history first (builds, deploys, scans)")
    s.add_argument("--script", help="read commands from this file instead of the terminal ('-' for stdin)")
    s.set_defaults(func=cmd_shell)

    s = sub.add_parser("check", help="show every gate for SERVICE TAG; exit 0 eligible, 1 blocked, 2 error")
    s.add_argument("service")
    s.add_argument("tag", nargs="?")
    s.add_argument("--env")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--expedite",
        metavar="REASON",
        help="check it as an expedited promotion (policy.expedite): skips what an expedite may skip",
    )
    s.set_defaults(func=cmd_check)

    s = sub.add_parser(
        "report",
        help="send a pipeline event to a running bot (for CI)",
        description="e.g. promobot report artifact.built --service api-gateway --tag 7a3f9c2 "
        "--digest sha256:… --commit-sha 7a3f9c2… --pipeline-run-id 42 --built-at now",
    )
    s.add_argument(
        "type",
        choices=["artifact.built", "deployment.finished", "verification.finished", "scan.finished", "sbom.published"],
    )
    s.add_argument("--url", help="the bot's base URL (default PROMOBOT_URL)")
    s.add_argument("--retries", type=int, default=4)
    s.add_argument(
        "fields",
        nargs=argparse.REMAINDER,
        help="--FIELD VALUE pairs; --check NAME=RESULT (repeatable); --report-file / --sbom-file PATH",
    )
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("audit", help="verify the audit chain or export promotion records")
    s.add_argument("action", choices=["export", "verify"])
    s.add_argument("--since", help="ISO date or time (UTC)")
    s.add_argument("--format", choices=["json", "jsonl"], default="json")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("metrics", help="promotion metrics and DORA figures")
    s.add_argument("--days", type=int, default=30)
    s.add_argument("--service")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_metrics)

    s = sub.add_parser("db", help="database schema")
    s.add_argument("action", choices=["upgrade"])
    s.set_defaults(func=cmd_db_upgrade)

    s = sub.add_parser("config", help="configuration")
    s.add_argument("action", choices=["validate"])
    s.add_argument("file", nargs="?", help="default: PROMOBOT_CONFIG or ./promobot.yml")
    s.set_defaults(func=cmd_config_validate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("slack_sdk", "slack_bolt", "urllib3", "github", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"invalid configuration — {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
