"""Process settings from the environment variables of the public contract; built in ``main``."""

from __future__ import annotations

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    promobot_audit_key: SecretStr | None = None  # makes the audit trail an HMAC chain
    promobot_url: str = "http://127.0.0.1:3000"
    promobot_instance_id: str | None = None
    promobot_outbox_interval: float = 2.0
    promobot_tracking_poll_interval: float = 30.0
    promobot_run_listing_lag: float = 35.0  # how long GitHub may take to list a run it accepted
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
