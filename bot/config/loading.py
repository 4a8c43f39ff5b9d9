"""Reading promobot.yml: YAML, then the model; every mistake named with its place and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bot.config.model import PromobotConfig
from bot.config.rules import violations


class ConfigError(Exception):
    """An invalid promobot.yml. ``problems`` holds one 'place: message' line per mistake."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path in the YAML document to its 1-based line number."""
    index: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return index

    def walk(node: Any, path: tuple[str, ...]) -> None:
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                kp = path + (str(key.value),)
                index[kp] = key.start_mark.line + 1
                walk(value, kp)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (str(i),))

    if root is not None:
        walk(root, ())
    return index


def _friendly(msg: str) -> str:
    msg = msg.replace("Field required", "field required")
    msg = msg.replace("Extra inputs are not permitted", "unknown field (check its spelling)")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg


def parse_config(text: str, path: str = "promobot.yml") -> PromobotConfig:
    """Validate a promobot.yml document; raise ConfigError naming every mistake."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "file"
        raise ConfigError(path, [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(path, ["(top): expected a mapping with environments, policy and services"])
    lines = _line_index(text)
    # the cross-field rules read the plain data, so they are reported even while some field is invalid
    # (pydantic would run the model's own cross-field validator only once every field is valid)
    rules = violations(raw)
    try:
        config = PromobotConfig.model_validate(raw)
    except ValidationError as exc:
        errors = [(tuple(str(p) for p in err["loc"]), _friendly(err["msg"])) for err in exc.errors()]
    else:
        return config
    field_errors = [(loc, msg) for loc, msg in errors if loc]  # loc () is the model's cross-field check
    taken = {loc for loc, _ in field_errors}
    found = field_errors + [(v.loc, v.message) for v in rules if v.loc not in taken]
    if not found:  # only the model's own check refused: say what it said
        found = [(loc, msg) for loc, msg in errors]
    found.sort(key=lambda item: _line_number(item[0], lines) or 0)  # in file order
    raise ConfigError(path, [_place(loc, raw, lines) + f": {msg}" + _line(loc, lines) for loc, msg in found]) from None


def _place(loc: tuple[str, ...], raw: dict, lines: dict[tuple[str, ...], int]) -> str:
    """A key path as people read it: environments by name rather than by number."""
    place = ".".join(loc) or "(top)"
    if len(loc) >= 2 and loc[0] == "environments" and loc[1].isdigit():
        envs = raw.get("environments") or []
        i = int(loc[1])
        if i < len(envs) and isinstance(envs[i], dict) and envs[i].get("name"):
            place = ".".join(("environments", str(envs[i]["name"])) + loc[2:])
    return place


def _line_number(loc: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    line = None
    probe = loc
    while probe and line is None:
        line = lines.get(probe)
        probe = probe[:-1]
    return line


def _line(loc: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> str:
    line = _line_number(loc, lines)
    return f" (line {line})" if line else ""


def load_config(path: str | Path) -> PromobotConfig:
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            str(p), [f"file not found: {p} (set PROMOBOT_CONFIG or create promobot.yml; see examples/promobot.yml)"]
        )
    return parse_config(p.read_text(encoding="utf-8"), str(p))
