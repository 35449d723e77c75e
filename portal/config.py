"""Settings, read from the environment once at start-up."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from portal import logs
from portal.services.crypto import Keyring

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name; under INSTANCE_DIR: development's own key, made once
MIN_SECRET_LENGTH = 32
MAX_PROXY_HOPS = 5

ENVIRONMENTS = ("development", "testing", "production")
GATEWAYS = ("sandbox", "stripe")
# Tests without a SECRET_KEY get a random key that lives as long as the process.
_PROCESS_SECRET = secrets.token_urlsafe(48)

log = logging.getLogger(__name__)


class ConfigError(RuntimeError):
    """The environment does not describe a runnable portal."""


@dataclass(frozen=True)
class Settings:
    env: str = "production"
    secret_key: str = ""
    # Earlier keys, still accepted for reading (sessions, forms, TOTP secrets, recovery codes,
    # reset links, sandbox webhooks) while keys rotate; the current key signs and encrypts.
    secret_key_fallbacks: tuple[str, ...] = ()
    database_url: str = f"sqlite:///{INSTANCE_DIR / 'portal.db'}"
    # Where background work travels to the worker. `make run` starts an embedded Redis and sets
    # it; empty anywhere else: work waits in the outbox (see workers/queue.py).
    redis_url: str = ""
    payment_gateway: str = ""  # empty: not chosen (the sandbox outside production)
    stripe_secret_key: str = ""
    stripe_webhook_secret: str = ""
    stripe_api_base: str = ""
    # Where people reach the portal ("https://billing.example.com"): every link in mail and the
    # gateway's return address, the same from a request and from a job. Required in production.
    public_url: str = ""
    # Bearer token for /metrics outside development; unset there: /metrics answers 404.
    metrics_token: str = ""
    mail_url: str = ""  # empty: mail is written under instance/mail/
    mail_dir: str = str(INSTANCE_DIR / "mail")
    mail_timeout: float = 10.0  # seconds to wait for the mail server (MAIL_TIMEOUT)
    storage_dir: str = str(INSTANCE_DIR / "files")
    # Statements: the longest range one covers (STATEMENT_MAX_DAYS), and how long a generated
    # file is kept before it is removed (STATEMENT_RETENTION_DAYS; links last 24 hours each).
    statement_max_days: int = 366
    statement_retention_days: int = 7
    # Where the receivables team hears of disputes: each customer message and withdrawal.
    disputes_email: str = "receivables@billing-portal.invalid"
    # The receivables system's webhook (optional): each event of /api/ar/events is POSTed there,
    # signed with AR_WEBHOOK_SECRET (Portal-Signature: t=…,v1=HMAC-SHA256 of "t.body").
    ar_webhook_url: str = ""
    ar_webhook_secret: str = ""
    default_locale: str = "en"
    # argon2 cost; tests lower it, production keeps the library's defaults
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    session_idle_minutes: int = 30
    session_absolute_hours: int = 12
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    # Rollout flags (portal/flags.py): each process reads them again at most this often
    # (FLAGS_REFRESH_SECONDS; 0: for every request and job). While `m25_portal` is off, the
    # maintenance page's Retry-After (MAINTENANCE_RETRY_AFTER seconds).
    flags_refresh_seconds: float = 2.0
    maintenance_retry_after: int = 300
    # Proxies in front that append to X-Forwarded-For/-Proto/-Host (a load balancer: 1); 0
    # serves clients directly and ignores those headers, as anyone can send them.
    trusted_proxy_hops: int = 0
    # Logs (portal/logs.py): "json" lines, or "text" (empty: text in development, else json),
    # from LOG_LEVEL up; errors also go to Sentry when SENTRY_DSN is set.
    log_format: str = ""
    log_level: str = "INFO"
    sentry_dsn: str = ""
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

    @property
    def statement_retention(self) -> timedelta:
        return timedelta(days=self.statement_retention_days)

    @property
    def keyring(self) -> Keyring:
        """SECRET_KEY for writing, it and SECRET_KEY_FALLBACKS for reading."""
        return Keyring(self.secret_key, self.secret_key_fallbacks)

    @property
    def public_host(self) -> str:
        """The host name of PUBLIC_URL: the only one production answers to."""
        return urlsplit(self.public_url).hostname or ""

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
            "metrics_token": "METRICS_TOKEN",
            "mail_url": "MAIL_URL",
            "storage_dir": "PORTAL_STORAGE_DIR",
            "mail_dir": "PORTAL_MAIL_DIR",
            "disputes_email": "DISPUTES_EMAIL",
            "ar_webhook_url": "AR_WEBHOOK_URL",
            "ar_webhook_secret": "AR_WEBHOOK_SECRET",
            "log_format": "LOG_FORMAT",
            "log_level": "LOG_LEVEL",
            "sentry_dsn": "SENTRY_DSN",
        }
        for attr, var in mapping.items():
            if environ.get(var):
                values[attr] = environ[var]
        if environ.get("SECRET_KEY_FALLBACKS"):
            values["secret_key_fallbacks"] = environ["SECRET_KEY_FALLBACKS"]
        for attr, var in {
            "session_idle_minutes": "SESSION_IDLE_MINUTES",
            "session_absolute_hours": "SESSION_ABSOLUTE_HOURS",
            "lockout_threshold": "LOCKOUT_THRESHOLD",
            "lockout_minutes": "LOCKOUT_MINUTES",
            "statement_max_days": "STATEMENT_MAX_DAYS",
            "statement_retention_days": "STATEMENT_RETENTION_DAYS",
            "maintenance_retry_after": "MAINTENANCE_RETRY_AFTER",
            "trusted_proxy_hops": "TRUSTED_PROXY_HOPS",
        }.items():
            if environ.get(var):
                try:
                    values[attr] = int(environ[var])
                except ValueError as error:
                    raise ConfigError(f"{var} must be a whole number") from error
        if environ.get("MAIL_TIMEOUT"):
            try:
                values["mail_timeout"] = float(environ["MAIL_TIMEOUT"])
            except ValueError as error:
                raise ConfigError("MAIL_TIMEOUT must be a number of seconds") from error
        if environ.get("FLAGS_REFRESH_SECONDS"):
            try:
                values["flags_refresh_seconds"] = float(environ["FLAGS_REFRESH_SECONDS"])
            except ValueError as error:
                raise ConfigError("FLAGS_REFRESH_SECONDS must be a number of seconds") from error
        extra: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            attr = key.lower()
            if attr in names:
                values[attr] = value
            else:
                extra[key] = value
        values["secret_key_fallbacks"] = _key_list(values.get("secret_key_fallbacks", ()))
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
        if self.statement_max_days < 1 or self.statement_retention_days < 1:
            raise ConfigError("STATEMENT_MAX_DAYS and STATEMENT_RETENTION_DAYS must be 1 or more")
        if not 0 <= self.flags_refresh_seconds <= 60:
            raise ConfigError("FLAGS_REFRESH_SECONDS must be between 0 and 60 seconds")
        if not 1 <= self.maintenance_retry_after <= 86400:
            raise ConfigError("MAINTENANCE_RETRY_AFTER must be between 1 and 86400 seconds")
        if not 0 <= self.trusted_proxy_hops <= MAX_PROXY_HOPS:
            raise ConfigError(
                f"TRUSTED_PROXY_HOPS must be 0 (no proxy) to {MAX_PROXY_HOPS}: how many proxies "
                "in front of the portal add X-Forwarded-For"
            )
        secret = self.secret_key
        if not secret:
            if self.is_production:
                raise ConfigError(
                    "SECRET_KEY must be set in production: 32 or more random characters, e.g. "
                    'the output of `python3 -c "import secrets; print(secrets.token_urlsafe(48))"`'
                )
            # Never a constant from the source: development keeps a random key of its own under
            # instance/, tests get one per process.
            secret = instance_secret(INSTANCE_DIR) if self.is_development else _PROCESS_SECRET
        fallbacks = tuple(k for k in self.secret_key_fallbacks if k != secret)
        if self.is_production:
            if len(secret) < MIN_SECRET_LENGTH:
                raise ConfigError("SECRET_KEY must be at least 32 characters in production")
            if any(len(k) < MIN_SECRET_LENGTH for k in fallbacks):
                raise ConfigError(
                    "every key in SECRET_KEY_FALLBACKS must be at least 32 characters"
                )
        gateway = self.payment_gateway.strip().lower()
        if not gateway:
            if self.is_production:
                raise ConfigError(
                    "PAYMENT_GATEWAY must be set in production: 'stripe' to take real "
                    "payments, or 'sandbox' to run on test cards only"
                )
            gateway = "sandbox"
        if gateway not in GATEWAYS:
            raise ConfigError("PAYMENT_GATEWAY must be 'sandbox' or 'stripe'")
        if gateway == "stripe" and not self.stripe_secret_key:
            raise ConfigError("PAYMENT_GATEWAY=stripe needs STRIPE_SECRET_KEY")
        if gateway == "stripe" and not self.stripe_webhook_secret:
            raise ConfigError("PAYMENT_GATEWAY=stripe needs STRIPE_WEBHOOK_SECRET")
        if self.public_url:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError("PUBLIC_URL must look like https://billing.example.com")
        if self.is_production and not self.public_url.startswith("https://"):
            # Links in mail (password resets) come from it and nothing else: never from the
            # Host header of whoever asked.
            raise ConfigError(
                "PUBLIC_URL must be set in production to the https address people use to "
                "reach the portal, e.g. PUBLIC_URL=https://billing.example.com: links in "
                "e-mails are built from it, and the portal answers to no other host name"
            )
        if self.is_production and not self.redis_url:
            raise ConfigError(
                "REDIS_URL must be set in production (e.g. redis://127.0.0.1:6379/0): background "
                "work (receipts, reset links, settlements) travels to the workers through it"
            )
        if self.ar_webhook_url:
            hook = urlsplit(self.ar_webhook_url)
            if hook.scheme not in ("http", "https") or not hook.hostname:
                raise ConfigError("AR_WEBHOOK_URL must look like https://ar.example.com/hooks")
            if self.is_production and hook.scheme != "https":
                raise ConfigError("AR_WEBHOOK_URL must be an https address in production")
            if len(self.ar_webhook_secret) < MIN_SECRET_LENGTH:
                raise ConfigError(
                    "AR_WEBHOOK_URL needs AR_WEBHOOK_SECRET (32 or more random characters): "
                    "the receiver checks each event's signature with it"
                )
        if self.is_production and self.metrics_token and len(self.metrics_token) < 32:
            raise ConfigError("METRICS_TOKEN must be at least 32 characters")
        log_format = self.log_format.strip().lower() or ("text" if self.is_development else "json")
        if log_format not in logs.FORMATS:
            raise ConfigError("LOG_FORMAT must be 'json' or 'text'")
        log_level = self.log_level.strip().upper()
        if log_level not in logs.LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(logs.LEVELS)}")
        if self.sentry_dsn:
            dsn = urlsplit(self.sentry_dsn)
            if dsn.scheme not in ("http", "https") or not dsn.hostname or not dsn.username:
                raise ConfigError("SENTRY_DSN must look like https://key@o0.ingest.sentry.io/0")
        return replace(
            self,
            secret_key=secret,
            secret_key_fallbacks=fallbacks,
            payment_gateway=gateway,
            log_format=log_format,
            log_level=log_level,
        )


def _key_list(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """SECRET_KEY_FALLBACKS: comma separated, newest first; blanks and repeats dropped."""
    items = value.split(",") if isinstance(value, str) else list(value)
    keys: list[str] = []
    for item in items:
        key = item.strip()
        if key and key not in keys:
            keys.append(key)
    return tuple(keys)


def instance_secret(directory: Path) -> str:
    """Development's own random SECRET_KEY: made once under `directory` (mode 0600) and reused
    across restarts, so sessions and encrypted TOTP secrets survive a restart of `make run`."""
    path = directory / SECRET_KEY_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        # Written whole to a private temporary file, then linked into place: another process
        # starting at the same moment reads either no file or the complete key, and the first
        # link wins (a link never replaces an existing file).
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".secret_key.")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o): now 0600", path, mode)
        path.chmod(0o600)
    key = path.read_text(encoding="ascii").strip()
    if len(key) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{path} holds no usable key: delete it and start again to make one")
    return key
