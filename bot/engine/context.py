"""What every stage of the engine works with: the rules, the database, the evidence and the outside roles."""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine

from bot.config import EnvironmentConfig, PromobotConfig, ServiceConfig
from bot.engine.errors import UserError
from bot.engine.roles import ApproverDirectory, Dispatcher, Notifier, Records
from checks.base import Registry, SourceHost
from storage import rows
from storage.models import Promotion

SYSTEM = "promobot"  # the actor of everything promobot does by itself


def closest(name: str, options: list[str]) -> str:
    """A hint for a mistyped name: the nearest known ones, else the list."""
    near = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(f"`{n}`" for n in near) + "?"
    return "known: " + ", ".join(f"`{o}`" for o in sorted(options)[:20])


@dataclass
class EngineContext:
    """Shared by the stages; built once by the service front (``bot.engine.service``)."""

    config: PromobotConfig
    db: Engine  # the SQLAlchemy engine
    ledger: Records
    dispatcher: Dispatcher
    notifier: Notifier
    directory: ApproverDirectory
    clock: Callable[[], datetime]
    instance_id: str
    registry: Registry | None = None
    source_host: SourceHost | None = None
    outbox_wakeup: asyncio.Event = field(default_factory=asyncio.Event)  # set when a dispatch is queued

    def service_config(self, service: str) -> ServiceConfig:
        if service not in self.config.services:
            raise UserError(f"Unknown service `{service}`: {closest(service, list(self.config.services))}")
        return self.config.services[service]

    def environment_config(self, environment: str) -> EnvironmentConfig:
        if environment not in self.config.environment_names:
            raise UserError(
                f"Unknown environment `{environment}`: {closest(environment, self.config.environment_names)}"
            )
        return self.config.environment(environment)

    def approvers_for(self, environment: str, *, expedited: bool = False) -> list[str]:
        """Who may approve a promotion into ``environment``: for an expedited one, only ``policy.expedite``'s
        approvers count; otherwise the environment's own."""
        expedite = self.config.policy.expedite
        if expedited and expedite is not None:
            return list(expedite.approvers)
        if environment not in self.config.environment_names:
            return []
        return list(self.config.environment(environment).approvers)

    def promotion(self, promotion_id: str) -> Promotion | None:
        """The promotion's row as it is now, or None (read, not attached to a session)."""
        return rows.promotion(self.db, promotion_id)
