"""promobot.yml (the team's rules) and the process settings (environment variables).

Both are built in ``main`` (``bot.cli``), never at import time.
"""

from bot.config.loading import ConfigError, load_config, parse_config
from bot.config.model import (
    CheckToggles,
    DigestConfig,
    EnvironmentConfig,
    Freeze,
    Policy,
    PromobotConfig,
    ServiceConfig,
    VulnerabilityException,
    Window,
    parse_window,
)
from bot.config.settings import Settings

__all__ = [
    "CheckToggles",
    "ConfigError",
    "DigestConfig",
    "EnvironmentConfig",
    "Freeze",
    "Policy",
    "PromobotConfig",
    "ServiceConfig",
    "Settings",
    "VulnerabilityException",
    "Window",
    "load_config",
    "parse_config",
    "parse_window",
]
