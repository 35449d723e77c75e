"""The customer billing portal."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from portal import (
    assets,
    clock,
    errors,
    flags,
    i18n,
    logs,
    maintenance,
    runtime,
    security,
    templating,
    web,
)
from portal.blueprints.activity.routes import bp as activity_bp
from portal.blueprints.api_ar import upserts as _api_ar_upserts  # noqa: F401 (routes on bp)
from portal.blueprints.api_ar.routes import bp as api_ar_bp
from portal.blueprints.api_docs.routes import bp as api_docs_bp
from portal.blueprints.api_portal import documents as _api_documents  # noqa: F401  (its routes)
from portal.blueprints.api_portal import history as _api_history  # noqa: F401  (its routes)
from portal.blueprints.api_portal import invoices as _api_invoices  # noqa: F401  (its routes)
from portal.blueprints.api_portal import payments as _api_payments  # noqa: F401  (its routes)
from portal.blueprints.api_portal import statements as _api_statements  # noqa: F401  (its routes)
from portal.blueprints.api_portal.routes import bp as api_portal_bp
from portal.blueprints.auth.routes import bp as auth_bp
from portal.blueprints.autopay.routes import bp as autopay_bp
from portal.blueprints.dashboard.routes import bp as dashboard_bp
from portal.blueprints.disputes.routes import bp as disputes_bp
from portal.blueprints.documents.routes import bp as documents_bp
from portal.blueprints.downloads.routes import bp as downloads_bp
from portal.blueprints.health.routes import bp as health_bp
from portal.blueprints.invitations.routes import bp as invitations_bp
from portal.blueprints.invoices.routes import bp as invoices_bp
from portal.blueprints.language.routes import bp as language_bp
from portal.blueprints.notifications.routes import bp as notifications_bp
from portal.blueprints.payment_methods.routes import bp as payment_methods_bp
from portal.blueprints.payments import groups as _groups  # noqa: F401  (its routes)
from portal.blueprints.payments import history as _history  # noqa: F401  (its routes)
from portal.blueprints.payments.routes import bp as payments_bp
from portal.blueprints.profile.routes import bp as profile_bp
from portal.blueprints.sandbox.routes import bp as sandbox_bp
from portal.blueprints.security.routes import bp as security_bp
from portal.blueprints.security_alerts.routes import bp as security_alerts_bp
from portal.blueprints.statements.routes import bp as statements_bp
from portal.blueprints.users.routes import bp as users_bp
from portal.blueprints.webhooks.routes import bp as webhooks_bp
from portal.cli import register_cli
from portal.config import PROJECT_ROOT, Settings
from portal.extensions import init_extensions
from workers.queue import WEB_TIMEOUT, client_options


def limits_storage_uri(redis_url: str) -> str:
    """Flask-Limiter's storage for REDIS_URL: the same Redis, in the `limits` library's words
    (it calls a unix socket, which redis-py and RQ call `unix://`, `redis+unix://`)."""
    if not redis_url:
        return "memory://"
    if redis_url.startswith("unix://"):
        return f"redis+{redis_url}"
    return redis_url


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. `overrides` replaces settings (by field name) for tests and tools."""
    settings = Settings.from_env(overrides=overrides)
    app = web.PortalApp(__name__, instance_relative_config=False)
    app.config.update(
        SETTINGS=settings,
        SECRET_KEY=settings.secret_key,
        # Rotation: sessions signed with an earlier key still open (Flask 3.1 reads these), and
        # so do forms: Flask-WTF hands this list to itsdangerous, which signs with the last key
        # and accepts any of them.
        SECRET_KEY_FALLBACKS=list(settings.secret_key_fallbacks),
        WTF_CSRF_SECRET_KEY=settings.keyring.oldest_first,
        TESTING=settings.is_testing,
        # Outside development the cookie is Secure and host-only (__Host-): no subdomain and no
        # plain-HTTP page can set or read it. Browsers treat http://127.0.0.1 as secure.
        SESSION_COOKIE_NAME="portal_session" if settings.is_development else "__Host-portal",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not settings.is_development,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the signed-in session
        WTF_CSRF_HEADERS=["X-CSRFToken"],
        RATELIMIT_STORAGE_URI=limits_storage_uri(settings.redis_url),
        # While Redis is away (stopped, or paused: each call gives up after WEB_TIMEOUT) the
        # limits are counted in this process's memory; Flask-Limiter logs one warning when it
        # falls back and goes back to Redis once it answers.
        RATELIMIT_STORAGE_OPTIONS=client_options(WEB_TIMEOUT) if settings.redis_url else {},
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_HEADERS_ENABLED=True,
        BABEL_DEFAULT_LOCALE=settings.default_locale,
        BABEL_TRANSLATION_DIRECTORIES=str(PROJECT_ROOT / "translations"),
        MAX_CONTENT_LENGTH=10 * 1024 * 1024,
    )
    app.config.update(dict(settings.extra))
    # One handler on the root logger for the whole process (idempotent), then Sentry if asked.
    logs.configure(settings.log_format, settings.log_level)
    logs.init_sentry(settings.sentry_dsn, settings.env)
    if settings.is_production:
        # Answer only to the portal's own name (PUBLIC_URL is required in production); another
        # Host header gets the 400 page (portal/errors.py).
        app.config["TRUSTED_HOSTS"] = [settings.public_host]
    if settings.is_production and settings.payment_gateway == "sandbox":
        logging.getLogger(__name__).warning(
            "PAYMENT_GATEWAY=sandbox in production: test cards mark invoices paid"
        )

    init_extensions(app, settings)
    runtime.init_app(app, settings)
    flags.init_app(app, settings.flags_refresh_seconds)
    app.extensions["portal.clock"] = clock.Clock()
    i18n.init_app(app)
    templating.init_app(app)
    security.init_app(app)
    assets.init_app(app, security.common_headers(settings.is_development))
    web.init_app(app)
    maintenance.init_app(app)
    errors.init_app(app)

    app.register_blueprint(auth_bp)
    app.register_blueprint(autopay_bp)
    app.register_blueprint(dashboard_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(disputes_bp)
    app.register_blueprint(documents_bp)
    app.register_blueprint(downloads_bp)
    app.register_blueprint(invoices_bp)
    app.register_blueprint(language_bp)
    app.register_blueprint(security_bp)
    app.register_blueprint(security_alerts_bp)
    app.register_blueprint(statements_bp)
    app.register_blueprint(payments_bp)
    app.register_blueprint(payment_methods_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(users_bp)
    app.register_blueprint(invitations_bp)
    app.register_blueprint(profile_bp)
    app.register_blueprint(activity_bp)
    app.register_blueprint(notifications_bp)
    app.register_blueprint(api_portal_bp)
    app.register_blueprint(api_docs_bp)
    app.register_blueprint(api_ar_bp)
    if settings.payment_gateway == "sandbox":
        app.register_blueprint(sandbox_bp)
    register_cli(app)
    if settings.trusted_proxy_hops:
        # Outermost, so every part of the app sees the client: rate limits, the lockout and
        # the audit log read request.remote_addr. Each hop is one proxy that appends its peer to
        # X-Forwarded-For; values further left were sent by the client and are ignored. The
        # forwarded Host is still checked against TRUSTED_HOSTS (production).
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    return app
