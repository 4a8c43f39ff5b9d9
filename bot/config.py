"""promobot.yml (the team's rules) and the process settings (environment variables).

Both are built in ``main`` (``bot.cli``), never at import time. A config file
is either valid as a whole or refused as a whole, with every mistake named by
its place in the file.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator,
                      model_validator)
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")
_WINDOW = re.compile(r"^(?P<days>[a-z]{3}(?:-[a-z]{3})?(?:,[a-z]{3}(?:-[a-z]{3})?)*)\s+"
                     r"(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SLACK_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")


def parse_duration(value: Any) -> timedelta:
    """'4h', '90m', '1d 2h', '30s' or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return timedelta(seconds=value)
    if isinstance(value, str) and value.strip():
        m = _DURATION.match(value.lower())
        if m and any(m.groups()):
            d, h, mi, s = (int(x) if x else 0 for x in m.groups())
            return timedelta(days=d, hours=h, minutes=mi, seconds=s)
    raise ValueError(f"not a duration: {value!r} (expected e.g. 4h, 90m, 1d)")


def format_duration(td: timedelta) -> str:
    total = int(td.total_seconds())
    if total <= 0:
        return "0m"
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    text = " ".join(p for p in parts if p)
    return text or f"{seconds}s"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Freeze(_Strict):
    start: str
    end: str
    reason: str = ""


class CheckToggles(_Strict):
    """Per-environment switches for the gates; every gate is on unless switched off."""

    immutable_tag: bool = True
    digest_matches: bool = True
    metadata_complete: bool = True
    source_commit_reachable: bool = True
    previous_environment_verified: bool = True
    vulnerabilities: bool = True
    licenses: bool = True
    sbom_present: bool = True
    soak_time: bool = True
    deployment_window: bool = True
    no_skipped_environment: bool = True
    gate_timeout: float = Field(default=10.0, gt=0, le=300)


class EnvironmentConfig(_Strict):
    name: str
    approval: Literal["automatic", "manual", "none"] = "none"
    approvers: list[str] = Field(default_factory=list)
    required_approvals: int = Field(default=1, ge=1, le=20)
    approval_ttl: timedelta = timedelta(hours=4)
    soak_time: timedelta = timedelta(0)
    windows: list[str] = Field(default_factory=list)
    timezone: str = "UTC"
    freezes: list[Freeze] = Field(default_factory=list)
    verification_deadline: timedelta = timedelta(hours=1)
    recent_failure_window: timedelta = timedelta(days=7)
    checks: CheckToggles = Field(default_factory=CheckToggles)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", v):
            raise ValueError("must be lowercase letters, digits, '-' or '_' (e.g. production)")
        return v

    @field_validator("approval_ttl", "soak_time", "verification_deadline", "recent_failure_window",
                     mode="before")
    @classmethod
    def _durations(cls, v: Any) -> timedelta:
        return parse_duration(v)

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not SLACK_ID.match(a)]
        if bad:
            raise ValueError(f"not Slack user or user-group ids: {', '.join(bad)} "
                             "(expected ids like U0PLATFORMLEAD or S0RELEASEMGRS)")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (expected an IANA name such as Europe/Berlin)")
        return v

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        for w in v:
            m = _WINDOW.match(w.strip().lower())
            if not m:
                raise ValueError(f"not a window: {w!r} (expected e.g. 'mon-fri 09:00-17:00')")
            for part in m["days"].replace("-", ",").split(","):
                if part not in DAYS:
                    raise ValueError(f"unknown day {part!r} in window {w!r}")
            for hhmm in (m["start"], m["end"]):
                h, mi = map(int, hhmm.split(":"))
                if h > 24 or mi > 59:
                    raise ValueError(f"not a time of day: {hhmm!r} in window {w!r}")
        return v

    @model_validator(mode="after")
    def _manual_needs_approvers(self) -> "EnvironmentConfig":
        if self.approval == "manual" and not self.approvers:
            raise ValueError("approval: manual needs at least one approver in approvers")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class VulnerabilityException(_Strict):
    id: str
    until: str
    reason: str = ""
    services: list[str] = Field(default_factory=list)

    @field_validator("until", mode="before")
    @classmethod
    def _until(cls, v: Any) -> str:
        from datetime import date
        if isinstance(v, date):
            return v.isoformat()
        date.fromisoformat(str(v))
        return str(v)


class Policy(_Strict):
    immutable_tag_pattern: str = r"^[0-9a-f]{7,40}$"
    mutable_tags: list[str] = Field(default_factory=lambda: ["latest", "stable", "main", "master",
                                                             "edge", "nightly", "dev", "staging",
                                                             "production", "prod"])
    block_severities: list[Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]] = ["CRITICAL"]
    prohibited_licenses: list[str] = Field(default_factory=list)
    require_sbom: bool = True
    require_scan: bool = True
    vulnerability_exceptions: list[VulnerabilityException] = Field(default_factory=list)

    @field_validator("immutable_tag_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}")
        return v

    @field_validator("block_severities", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return [str(s).upper() for s in v] if isinstance(v, list) else v


class ServiceConfig(_Strict):
    repository: str
    image: str
    workflow: str
    ref: str = "main"
    channel: str

    @field_validator("repository")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", v):
            raise ValueError("must be a GitHub owner/name such as acme/api-gateway")
        return v

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        if not re.fullmatch(r"[CGD][A-Z0-9]{2,}", v):
            raise ValueError("must be a Slack channel id such as C0DEPLOYS (not a #name)")
        return v


class DigestConfig(_Strict):
    channel: str
    schedule: str
    timezone: str = "UTC"
    services: list[str] = Field(default_factory=list)
    window: timedelta = timedelta(days=1)

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v: Any) -> timedelta:
        return parse_duration(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return EnvironmentConfig._tz(v)

    @model_validator(mode="after")
    def _schedule(self) -> "DigestConfig":
        from bot.digests import digest_trigger  # the scheduler's own reading of the schedule
        digest_trigger(self)
        return self


class PromobotConfig(_Strict):
    environments: list[EnvironmentConfig] = Field(min_length=1)
    policy: Policy = Field(default_factory=Policy)
    services: dict[str, ServiceConfig] = Field(min_length=1)
    digests: list[DigestConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross(self) -> "PromobotConfig":
        names = [e.name for e in self.environments]
        if self.environments[-1].approval != "manual":
            raise ValueError(f"environments.{names[-1]}: the last environment needs approval: manual "
                             "(production changes need a person's approval)")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"environments: names must be unique, repeated: {', '.join(dupes)}")
        for svc in self.services:
            if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", svc):
                raise ValueError(f"services.{svc}: service names must be lowercase letters, digits, '.', '-' or '_'")
        for i, d in enumerate(self.digests):
            unknown = [s for s in d.services if s not in self.services]
            if unknown:
                raise ValueError(f"digests.{i}.services: unknown service(s) {', '.join(unknown)}")
        return self

    @property
    def environment_names(self) -> list[str]:
        return [e.name for e in self.environments]

    def environment(self, name: str) -> EnvironmentConfig:
        for env in self.environments:
            if env.name == name:
                return env
        raise KeyError(name)

    def previous_environment(self, name: str) -> str | None:
        names = self.environment_names
        i = names.index(name)
        return names[i - 1] if i > 0 else None

    def next_environment(self, name: str) -> str | None:
        names = self.environment_names
        i = names.index(name)
        return names[i + 1] if i + 1 < len(names) else None


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
        msg = msg[len("Value error, "):]
    return msg


def parse_config(text: str, path: str = "promobot.yml") -> PromobotConfig:
    """Validate a promobot.yml document; raise ConfigError naming every mistake."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "file"
        raise ConfigError(path, [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"])
    if not isinstance(raw, dict):
        raise ConfigError(path, ["(top): expected a mapping with environments, policy and services"])
    lines = _line_index(text)
    try:
        return PromobotConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            place = ".".join(loc) or "(top)"
            # environments are a list: name them rather than number them
            if len(loc) >= 2 and loc[0] == "environments" and loc[1].isdigit():
                envs = raw.get("environments") or []
                i = int(loc[1])
                if i < len(envs) and isinstance(envs[i], dict) and envs[i].get("name"):
                    place = ".".join(("environments", str(envs[i]["name"])) + loc[2:])
            line = None
            probe = loc
            while probe and line is None:
                line = lines.get(probe)
                probe = probe[:-1]
            suffix = f" (line {line})" if line else ""
            problems.append(f"{place}: {_friendly(err['msg'])}{suffix}")
        raise ConfigError(path, problems)


def load_config(path: str | Path) -> PromobotConfig:
    p = Path(path)
    if not p.exists():
        raise ConfigError(str(p), [f"file not found: {p} (set PROMOBOT_CONFIG or create promobot.yml; "
                                   "see examples/promobot.yml)"])
    return parse_config(p.read_text(encoding="utf-8"), str(p))


class Settings(BaseSettings):
    """Process settings from the environment (the contract's variable names)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    promobot_config: str = "./promobot.yml"
    database_url: str = "sqlite:///./promobot.db"
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    github_token: SecretStr | None = None
    github_app_id: str | None = None
    github_app_private_key: SecretStr | None = None
    github_app_installation_id: int | None = None
    github_api_url: str = "https://api.github.com"
    github_webhook_secret: SecretStr | None = None
    promobot_api_token: SecretStr | None = None
    promobot_url: str = "http://127.0.0.1:3000"
    promobot_instance_id: str | None = None
    promobot_outbox_interval: float = 2.0
    promobot_tracking_poll_interval: float = 30.0
    promobot_audit_archive_dir: str = "./audit-archive"

    @field_validator("slack_api_url")
    @classmethod
    def _slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"

    @property
    def github_configured(self) -> bool:
        return bool(self.github_token or (self.github_app_id and self.github_app_private_key))

    def secret(self, name: str) -> str | None:
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None
