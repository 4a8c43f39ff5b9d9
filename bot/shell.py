"""`promobot shell`: the bot in a terminal, as Hubot's shell adapter and Errbot's text backend.

Same command router, engine, gates and storage as in Slack. Cards are drawn
as text with numbered buttons; `press N` clicks one. Without GitHub
credentials a dry-run dispatcher shows exactly what would be dispatched.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import Any

from bot.app import build
from bot.clients.image_store import InMemoryRegistry
from bot.clients.slack_directory import StaticDirectory
from bot.config import PromobotConfig, Settings
from bot.demo import DemoClock, record_history
from bot.engine.errors import Conflict, UserError
from bot.engine.roles import PromotionView
from checks.reports import ReportError
from handlers import blocks as B
from handlers.pipeline_events import BadEvent, BadFile, apply_event, read_json_file, report_problem, validate_event
from storage.db import redact_url

SHELL_HELP = """Type slash commands as in Slack, as the current user:
  /promote SERVICE [TAG] [to ENV] [--check] [--expedite REASON…]    /rollback SERVICE [TAG] [in ENV] [reason]    /status [SERVICE]
  as USER_ID                 act as another Slack user (e.g. as U0PLATFORMLEAD)
  press N [reason…]          click button N of the cards above (Reject takes a reason)
  event TYPE key=value …     send a pipeline event (report=@file.json / sbom=@file.json / checks.NAME=RESULT)
  help, quit"""


def blocks_to_text(blocks: list[dict]) -> list[str]:
    """Block Kit as plain lines (buttons are numbered by the caller)."""
    lines: list[str] = []
    for b in blocks:
        t = b.get("type")
        if t == "header":
            lines.append(f"== {b['text']['text']} ==")
        elif t == "section":
            if b.get("text"):
                lines.append(b["text"]["text"])
            for f in b.get("fields") or []:
                lines.append("  " + f["text"].replace("\n", ": ", 1))
        elif t == "context":
            lines.append("  (" + " ".join(e.get("text", "") for e in b["elements"]) + ")")
        elif t == "divider":
            lines.append("  ---")
    return lines


class ShellNotifier:
    """Prints what Slack would show; remembers the buttons of live cards."""

    def __init__(self, out: Callable[[str], None]):
        self.out = out
        self.buttons: list[tuple[str, str, str]] = []  # (action_id, label, promotion id)
        self._ts = 0

    def _draw(self, view: PromotionView, where: str) -> None:
        blocks = [b.to_dict() for b in B.approval_card(view)]
        self.out(f"\n[{where}]")
        for line in blocks_to_text(blocks):
            self.out("  " + line)
        self._remember_buttons(view, blocks)

    def _remember_buttons(self, view: PromotionView, blocks: list[dict]) -> None:
        """The card's current buttons replace its old ones (numbers shown again when they change)."""
        before = [x for x in self.buttons if x[2] == view.id]
        self.buttons = [x for x in self.buttons if x[2] != view.id]
        for b in blocks:
            if b["type"] == "actions":
                for el in b["elements"]:
                    self.buttons.append((el["action_id"], el["text"]["text"], el["value"]))
        if [x for x in self.buttons if x[2] == view.id] == before:
            return
        for i, (_, label, pid) in enumerate(self.buttons, 1):
            if pid == view.id:
                self.out(f"  [{i}] {label}")

    async def promotion_requested(
        self, view: PromotionView, approver_users: list[str]
    ) -> tuple[str | None, str | None]:
        self._ts += 1
        self._draw(view, f"#{view.channel} card")
        for user in approver_users:
            if user != view.requested_by:
                self.out(
                    f"[DM to {user}] <@{view.requested_by}> asks you to approve {view.service} "
                    f"{view.tag} → {view.target_environment} ({view.id})"
                )
        return view.channel, f"shell.{self._ts}"

    async def promotion_changed(self, view: PromotionView, note: str | None = None) -> None:
        # The whole card was shown once; an update shows its new header and any buttons left.
        blocks = [b.to_dict() for b in B.approval_card(view)]
        self.out(f"[#{view.channel} card updated] {blocks_to_text(blocks[:1])[0]}")
        self._remember_buttons(view, blocks)
        if note:
            await self.note(view, note)

    async def note(self, view: PromotionView, note: str) -> None:
        self.out(f"  [thread] {note}")

    async def alert(self, channel: str, text: str) -> None:
        self.out(f"[#{channel}] {text}")

    async def tell(self, user: str, text: str) -> None:
        self.out(f"[DM to {user}] {text}")


class SilentNotifier:
    """For commands that show their own output (``promobot check``)."""

    async def promotion_requested(self, view: PromotionView, approver_users: list[str]) -> tuple[None, None]:
        return None, None

    async def promotion_changed(self, view: PromotionView, note: str | None = None) -> None:
        return None

    async def note(self, view: PromotionView, note: str) -> None:
        return None

    async def alert(self, channel: str, text: str) -> None:
        return None

    async def tell(self, user: str, text: str) -> None:
        return None


def parse_event_words(words: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """`event TYPE key=value …` → an event body and the files it was read from (``{"report":
    "report=@trivy.json"}``); `@path` loads JSON, checks.NAME=… builds checks. A file that is not
    JSON is a UserError naming it, what was expected and what was found."""
    if not words:
        raise UserError("Expected `event TYPE key=value …`, e.g. `event artifact.built service=api-gateway …`.")
    event: dict[str, Any] = {"type": words[0]}
    files: dict[str, str] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise UserError(f"Expected key=value, got {word!r}.")
        parsed: Any = value
        if value.startswith("@"):
            try:
                parsed = read_json_file(value[1:], key)
            except BadFile as exc:
                raise UserError(f"{key}=@{exc}") from None
            files[key] = f"{key}=@{value[1:]}"
        if key.startswith("checks."):
            event.setdefault("checks", {})[key[len("checks.") :]] = parsed
        else:
            event[key] = parsed
    return event, files


class Shell:
    def __init__(self, bot: Any, notifier: ShellNotifier, user: str, out: Callable[[str], None]):
        self.bot = bot
        self.notifier = notifier
        self.user = user
        self.out = out

    async def settle(self) -> None:
        """Let the outbox deliver what approvals queued, as the background worker would."""
        while await self.bot.service.process_outbox():
            pass

    async def send_event(
        self, event: dict[str, Any], *, follow_up: bool = True, files: dict[str, str] | None = None
    ) -> str:
        """What the pipeline API would answer, as text; ``files`` names where reports came from."""
        try:
            checked = validate_event(
                event, services=self.bot.config.services, environments=self.bot.config.environment_names
            )
            result = await apply_event(self.bot.service, checked, actor=f"shell:{self.user}", follow_up=follow_up)
        except BadEvent as exc:
            return "400 invalid event:\n" + "\n".join(f"  {p}" for p in exc.problems)
        except ReportError as exc:  # one line: the file, what was expected, what was found
            return f"400 invalid event: {report_problem(event, exc, files)}"
        except Conflict as exc:
            return f"409 {exc}"
        return f"202 {event['type']}: {result}"

    async def line(self, text: str) -> bool:
        """Handle one line; False when the user quits."""
        text = text.strip()
        if not text or text.startswith("#"):
            return True
        if text in ("quit", "exit", "\\q"):
            return False
        try:
            await self._line(text)
        except UserError as exc:
            self.out(f"! {exc}")
        await self.settle()
        return True

    async def _line(self, text: str) -> None:
        router = self.bot.router
        if text == "help":
            self.out(SHELL_HELP)
        elif text.startswith("as "):
            self.user = text[3:].strip()
            self.out(f"you are now {self.user}")
        elif text.startswith("/"):
            name, _, rest = text.partition(" ")
            commands = {"/promote": router.promote, "/rollback": router.rollback, "/status": router.status}
            if name not in commands:
                self.out(f"! unknown command {name}: try /promote, /rollback or /status")
                return
            reply = await commands[name](self.user, rest)
            self.out("[only you] ")
            for line in blocks_to_text([b.to_dict() for b in reply.blocks]) or [reply.text]:
                self.out("  " + line)
        elif text.startswith("press"):
            await self._press(text.split(maxsplit=2)[1:])
        elif text.startswith("event"):
            try:
                words = shlex.split(text)[1:]
            except ValueError as exc:  # an unclosed quote
                raise UserError(f"Cannot read that line: {exc}.") from None
            event, files = parse_event_words(words)
            self.out(await self.send_event(event, files=files))
        else:
            self.out("! not understood; type help")

    async def _press(self, args: list[str]) -> None:
        if not args or not args[0].isdigit() or not 1 <= int(args[0]) <= len(self.notifier.buttons):
            raise UserError(f"Expected `press N` with N from 1 to {len(self.notifier.buttons)}.")
        action, _label, pid = self.notifier.buttons[int(args[0]) - 1]
        service = self.bot.service
        if action == B.APPROVE:
            result = await service.approve(pid, self.user)
        elif action == B.CANCEL:
            result = await service.cancel(pid, self.user)
        elif action == B.REVOKE:
            result = await service.revoke_approval(pid, self.user)
        else:
            reason = args[1] if len(args) > 1 else ""
            if not reason:
                raise UserError("Reject needs a reason: `press N the reason`.")
            result = await service.reject(pid, self.user, reason)
        if not result.changed:
            self.out(f"[only you] {result.message}")


async def run_shell(
    settings: Settings,
    config: PromobotConfig,
    *,
    user: str,
    groups: dict[str, list[str]],
    demo: bool = False,
    script: str | None = None,
) -> int:
    def out(text: str) -> None:
        print(text, flush=True)

    notifier = ShellNotifier(out)
    clock = DemoClock()
    # the demo has no registry to ask: its builds push to one in memory, which the digest gate reads
    registry = InMemoryRegistry() if demo else None
    bot = build(
        settings,
        config,
        notifier=notifier,
        directory=StaticDirectory(groups),
        with_slack=False,
        clock=clock,
        registry=registry,
    )
    shell = Shell(bot, notifier, user, out)
    out(
        f"promobot shell — database {redact_url(settings.database_url)}; dispatch: "
        f"{'DRY RUN (no GitHub credentials)' if bot.service.dispatcher.dry_run else 'GitHub'}; "
        f"you are {user}. Type help."
    )
    if demo:
        assert registry is not None
        notifier.out = lambda _text: None  # the history's cards and notes are not this session's
        try:
            problems = await record_history(
                bot, clock, lambda event: shell.send_event(event, follow_up=False), shell.settle, push=registry.push
            )
        finally:
            notifier.out = out
        for problem in problems:
            out(f"demo history: {problem}")
        service = next(iter(config.services))
        out(
            f"demo history recorded for {service} (every environment reached through a promotion). Try: /status {service}"
        )
    stream = sys.stdin if script in (None, "-") else open(script, encoding="utf-8")  # noqa: SIM115 (closed below)
    interactive = script is None and sys.stdin.isatty()
    try:
        while True:
            if interactive:
                try:
                    text = input(f"{shell.user}> ")
                except EOFError:
                    break
            else:
                text = stream.readline()
                if not text:
                    break
                out(f"{shell.user}> {text.rstrip()}")
            if not await shell.line(text):
                break
    finally:
        if stream is not sys.stdin:
            stream.close()
    return 0
