"""Flask extensions and the request-scoped database session."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, request
from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from portal import clock
from portal.config import Settings
from portal.db import begin_unit, end_unit, make_engine, make_sessionmaker
from portal.gateways import PaymentGateway
from portal.migrate import schema_is_current
from portal.services.mail import Mailer
from workers.queue import EmbeddedQueue, JobQueue, RQJobQueue, defer

csrf = CSRFProtect()
login_manager = LoginManager()
babel = Babel()
log = logging.getLogger(__name__)
limiter = Limiter(key_func=get_remote_address, default_limits=[])


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class Database:
    """One engine per app; one session per request (or job), closed at teardown.

    A request is one unit of work: with a non-safe method it writes, and on SQLite each of its
    transactions then takes the write lock when it begins; a GET reads (portal/db.py)."""

    engine: Engine
    sessionmaker: sessionmaker[Session]

    def init_app(self, app: Flask, settings: Settings) -> None:
        self.engine = make_engine(settings.database_url)
        self.sessionmaker = make_sessionmaker(self.engine)
        app.extensions["portal.db"] = self
        app.before_request(self._begin_unit)  # the first hook: before anything reads
        app.teardown_request(self._end_unit)
        app.teardown_appcontext(self._close)

    @staticmethod
    def _begin_unit() -> None:
        g.db_unit = begin_unit(writes=request.method not in SAFE_METHODS)

    @staticmethod
    def _end_unit(_exc: BaseException | None) -> None:
        token = g.pop("db_unit", None)
        if token is not None:
            end_unit(token)

    @staticmethod
    def get() -> Database:
        db: Database = current_app.extensions["portal.db"]
        return db

    def _close(self, _exc: BaseException | None) -> None:
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            session.close()  # anything not committed is rolled back


def db_session() -> Session:
    """The request's session, created on first use."""
    if "db_session" not in g:
        g.db_session = Database.get().sessionmaker()
    session: Session = g.db_session
    return session


def settings() -> Settings:
    value: Settings = current_app.config["SETTINGS"]
    return value


def mailer() -> Mailer:
    config = settings()
    return Mailer(config.mail_url, config.mail_dir)


def jobs() -> JobQueue:
    queue: JobQueue = current_app.extensions["portal.jobs"]
    return queue


def hand_off(session: Session, func: Callable[..., Any], *args: Any) -> None:
    """Run `func(*args)` as a job once `session` commits. Should the queue refuse it (Redis
    down), it runs right here instead: a receipt or a reset link is late, never lost."""
    queue = jobs()

    def go() -> None:
        try:
            queue.enqueue(func, *args)
        except Exception:
            log.exception("the job queue refused %s; running it in this process", func.__name__)
            func(*args)

    defer(session, go)


def gateway(session: Session) -> PaymentGateway:
    """The configured gateway, working in `session` (the sandbox keeps its records there)."""
    config = settings()
    if config.payment_gateway == "stripe":
        from portal.gateways.stripe import StripeGateway

        return StripeGateway(
            config.stripe_secret_key, config.stripe_webhook_secret, config.stripe_api_base
        )
    from portal.gateways.sandbox import SandboxGateway
    from workers import jobs as job_functions

    queue = jobs()

    def settle_later(reference: str, when: Any) -> None:
        defer(
            session,
            lambda: queue.enqueue_at(when, job_functions.deliver_sandbox_settlement, reference),
        )

    return SandboxGateway(
        session,
        secret_key=config.secret_key,
        fallback_keys=config.secret_key_fallbacks,
        now=clock.now,
        on_processing=settle_later,
    )


def _init_jobs(app: Flask, config: Settings) -> None:
    if config.redis_url:
        app.extensions["portal.jobs"] = RQJobQueue(config.redis_url)
        return

    def in_app(job: Any) -> Any:
        with app.app_context():
            return job()

    from workers import jobs as job_functions

    engine = app.extensions["portal.db"].engine
    queue = EmbeddedQueue(
        run=in_app,
        ready=lambda: schema_is_current(engine),
        not_ready_message=(
            "background jobs wait: the database schema is not current "
            "(run `flask --app wsgi db upgrade`)"
        ),
    )
    queue.periodic = job_functions.PERIODIC
    app.extensions["portal.jobs"] = queue
    if config.is_testing:
        return  # tests run the queue by hand, at the clock they set

    # The thread belongs to a process that serves: not to `flask db upgrade` or `seed` (they
    # would race the migration), nor to a reloader's watcher, nor to a pre-fork master.
    @app.before_request
    def _start_jobs() -> None:
        if not queue.started:
            queue.start()


def init_extensions(app: Flask, config: Settings) -> dict[str, Any]:
    Database().init_app(app, config)
    _init_jobs(app, config)
    csrf.init_app(app)
    login_manager.init_app(app)
    babel.init_app(app)
    limiter.init_app(app)
    return app.extensions
