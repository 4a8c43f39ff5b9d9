"""promobot.yml: the team's rules, as a validated model.

A file is either valid as a whole or refused as a whole (``bot.config.loading``
names every mistake by its place in the file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, time, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.clock import parse_duration
from bot.config.rules import ALWAYS_MUTABLE, violations
from bot.config.schedule import digest_trigger

WINDOW_PATTERN = re.compile(
    r"^(?P<days>[a-z]{3}(?:-[a-z]{3})?(?:,[a-z]{3}(?:-[a-z]{3})?)*)\s+"
    r"(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})$"
)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SLACK_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")


@dataclass(frozen=True)
class Window:
    """A deployment window such as ``mon-fri 09:00-17:00``: weekdays (0 is Monday) and local times.
    An overnight window (``fri 22:00-06:00``) opens on its days and runs into the next morning."""

    days: frozenset[int]
    start: time
    end: time


def _days(spec: str, window: str) -> frozenset[int]:
    out: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        for name in (first, last or first):
            if name not in DAYS:
                raise ValueError(f"unknown day {name!r} in window {window!r}")
        i, end = DAYS.index(first), DAYS.index(last or first)
        out.add(i)
        while i != end:
            i = (i + 1) % 7
            out.add(i)
    return frozenset(out)


def _time_of_day(hhmm: str, window: str) -> time:
    h, m = map(int, hhmm.split(":"))
    if h > 24 or m > 59:
        raise ValueError(f"not a time of day: {hhmm!r} in window {window!r}")
    return time(23, 59, 59, 999999) if h == 24 else time(h, m)


@lru_cache(maxsize=512)
def parse_window(text: str) -> Window:
    """``"mon-fri 09:00-17:00"`` → a Window; raises ValueError saying what is wrong."""
    m = WINDOW_PATTERN.match(text.strip().lower())
    if not m:
        raise ValueError(f"not a window: {text!r} (expected e.g. 'mon-fri 09:00-17:00')")
    return Window(_days(m["days"], text), _time_of_day(m["start"], text), _time_of_day(m["end"], text))


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
    # the last environment is always protected; protected environments are always manual and keep the
    # promotion model's non-negotiable gates on (``bot.config.rules``)
    protected: bool = False
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

    @field_validator("approval_ttl", "soak_time", "verification_deadline", "recent_failure_window", mode="before")
    @classmethod
    def _durations(cls, v: Any) -> timedelta:
        return parse_duration(v)

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not SLACK_ID.match(a)]
        if bad:
            raise ValueError(
                f"not Slack user or user-group ids: {', '.join(bad)} "
                "(expected ids like U0PLATFORMLEAD or S0RELEASEMGRS)"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (expected an IANA name such as Europe/Berlin)") from None
        return v

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        for w in v:
            parse_window(w)
        return v

    @model_validator(mode="after")
    def _manual_needs_approvers(self) -> EnvironmentConfig:
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
        if isinstance(v, date):
            return v.isoformat()
        date.fromisoformat(str(v))
        return str(v)


class ExpediteConfig(_Strict):
    """``policy.expedite``: who may approve an expedited promotion (a critical security patch that skips an
    intermediate environment, its soak and the deployment window), and how many of them must."""

    approvers: list[str] = Field(min_length=1)
    required_approvals: int = Field(default=2, ge=1, le=20)
    approval_ttl: timedelta | None = None  # default: the target environment's approval_ttl

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, v: list[str]) -> list[str]:
        return EnvironmentConfig._approvers(v)

    @field_validator("approval_ttl", mode="before")
    @classmethod
    def _ttl(cls, v: Any) -> timedelta | None:
        return None if v is None else parse_duration(v)


class Policy(_Strict):
    immutable_tag_pattern: str = r"^[0-9a-f]{7,40}$"
    mutable_tags: list[str] = Field(
        default_factory=lambda: [
            "latest",
            "stable",
            "main",
            "master",
            "edge",
            "nightly",
            "dev",
            "staging",
            "production",
            "prod",
        ]
    )
    block_severities: list[Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]] = ["CRITICAL"]
    prohibited_licenses: list[str] = Field(default_factory=list)
    # license entries that are neither SPDX ids, license names license-expression knows, nor
    # LicenseRefs the SBOM defines: let through (allow), let through and named (warn), or refused
    unknown_licenses: Literal["allow", "warn", "block"] = "warn"
    require_sbom: bool = True
    require_scan: bool = True
    vulnerability_exceptions: list[VulnerabilityException] = Field(default_factory=list)
    # environments (after the first) that take deployments and verifications no promobot promotion dispatched,
    # recorded as out-of-band (flagged, never evidence); every other one refuses them with a 409
    out_of_band_environments: list[str] = Field(default_factory=list)
    expedite: ExpediteConfig | None = None  # off unless configured

    @property
    def refused_tags(self) -> list[str]:
        """The mutable tag names refused outright: ``latest`` always, then ``mutable_tags``."""
        names = [ALWAYS_MUTABLE] + [t for t in self.mutable_tags if t.lower() != ALWAYS_MUTABLE]
        return names

    def is_mutable(self, tag: str) -> bool:
        return tag.lower() in {t.lower() for t in self.refused_tags}

    @field_validator("immutable_tag_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
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
    def _schedule(self) -> DigestConfig:
        digest_trigger(self.schedule, self.timezone)  # the scheduler's own reading of the schedule
        return self


class PromobotConfig(_Strict):
    environments: list[EnvironmentConfig] = Field(min_length=1)
    policy: Policy = Field(default_factory=Policy)
    services: dict[str, ServiceConfig] = Field(min_length=1)
    digests: list[DigestConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross(self) -> PromobotConfig:
        # ``bot.config.loading`` reports every violation with its place; this catches models built in code
        broken = violations(self.model_dump())
        if broken:
            first = broken[0]
            raise ValueError(f"{'.'.join(first.loc)}: {first.message}")
        return self

    def is_protected(self, environment: str) -> bool:
        """The last environment and every ``protected: true`` one: always manual, non-negotiable gates on."""
        return environment == self.environment_names[-1] or self.environment(environment).protected

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
