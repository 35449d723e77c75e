"""Settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"

ENVIRONMENTS = ("development", "testing", "production")
# Only ever used where the environment itself says "development" or "testing".
_DEV_SECRET = "dev-only-secret-not-for-production"  # noqa: S105


class ConfigError(RuntimeError):
    """The environment does not describe a runnable portal."""


@dataclass(frozen=True)
class Settings:
    env: str = "production"
    secret_key: str = ""
    database_url: str = f"sqlite:///{INSTANCE_DIR / 'portal.db'}"
    redis_url: str = ""  # empty: jobs run in-process (see workers/queue.py)
    payment_gateway: str = "sandbox"
    stripe_secret_key: str = ""
    stripe_webhook_secret: str = ""
    stripe_api_base: str = ""
    # Where people reach the portal ("https://billing.example.com"): links in e-mails and the
    # gateway's return address, the same from a request and from a job.
    public_url: str = ""
    mail_url: str = ""  # empty: mail is written under instance/mail/
    mail_dir: str = str(INSTANCE_DIR / "mail")
    storage_dir: str = str(INSTANCE_DIR / "files")
    default_locale: str = "en"
    # argon2 cost; tests lower it, production keeps the library's defaults
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    session_idle_minutes: int = 30
    session_absolute_hours: int = 12
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_development(self) -> bool:
        return self.env == "development"

    @property
    def is_testing(self) -> bool:
        return self.env == "testing"

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        environ = os.environ if environ is None else environ
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        env = environ.get("PORTAL_ENV", "production").strip().lower()
        values["env"] = env
        mapping = {
            "secret_key": "SECRET_KEY",
            "database_url": "DATABASE_URL",
            "redis_url": "REDIS_URL",
            "payment_gateway": "PAYMENT_GATEWAY",
            "stripe_secret_key": "STRIPE_SECRET_KEY",
            "stripe_webhook_secret": "STRIPE_WEBHOOK_SECRET",
            "stripe_api_base": "STRIPE_API_BASE",
            "public_url": "PUBLIC_URL",
            "mail_url": "MAIL_URL",
            "storage_dir": "PORTAL_STORAGE_DIR",
            "mail_dir": "PORTAL_MAIL_DIR",
        }
        for attr, var in mapping.items():
            if environ.get(var):
                values[attr] = environ[var]
        for attr, var in {
            "session_idle_minutes": "SESSION_IDLE_MINUTES",
            "session_absolute_hours": "SESSION_ABSOLUTE_HOURS",
            "lockout_threshold": "LOCKOUT_THRESHOLD",
            "lockout_minutes": "LOCKOUT_MINUTES",
        }.items():
            if environ.get(var):
                values[attr] = int(environ[var])
        extra: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            attr = key.lower()
            if attr in names:
                values[attr] = value
            else:
                extra[key] = value
        if not values.get("public_url") and values["env"] != "production":
            # Development serves on PORT; tests' clients call themselves "localhost".
            port = environ.get("PORT", "5000")
            testing = values["env"] == "testing"
            values["public_url"] = "http://localhost" if testing else f"http://127.0.0.1:{port}"
        settings = replace(cls(), **values, extra=extra)
        return settings.validated()

    def validated(self) -> Settings:
        if self.env not in ENVIRONMENTS:
            raise ConfigError(f"PORTAL_ENV must be one of {', '.join(ENVIRONMENTS)}")
        secret = self.secret_key
        if not secret:
            if self.is_production:
                raise ConfigError("SECRET_KEY must be set outside development and tests")
            secret = _DEV_SECRET
        elif self.is_production and len(secret) < 32:
            raise ConfigError("SECRET_KEY must be at least 32 characters in production")
        if self.payment_gateway not in {"sandbox", "stripe"}:
            raise ConfigError("PAYMENT_GATEWAY must be 'sandbox' or 'stripe'")
        if self.payment_gateway == "stripe" and not self.stripe_secret_key:
            raise ConfigError("PAYMENT_GATEWAY=stripe needs STRIPE_SECRET_KEY")
        if self.public_url:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError("PUBLIC_URL must look like https://billing.example.com")
        if self.payment_gateway == "stripe" and not self.stripe_webhook_secret:
            raise ConfigError("PAYMENT_GATEWAY=stripe needs STRIPE_WEBHOOK_SECRET")
        if (
            self.payment_gateway == "stripe"
            and self.is_production
            and not self.public_url.startswith("https://")
        ):
            raise ConfigError("PAYMENT_GATEWAY=stripe in production needs PUBLIC_URL (https://…)")
        return replace(self, secret_key=secret)
