"""Flask extensions and the request-scoped database session.

The gateway, the job queue, mail, files and public links are the runtime's (portal/runtime.py)."""

from __future__ import annotations

import logging
from typing import Any

from argon2 import PasswordHasher
from flask import Flask, current_app, g, request
from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from portal import metrics
from portal.config import Settings
from portal.db import begin_unit, end_unit, make_engine, make_sessionmaker
from portal.services.passwords import hasher

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
        metrics.watch_pool(self.engine)  # the pool's gauges on /metrics
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


def password_hasher() -> PasswordHasher:
    """Argon2id with the configured costs (tests make it cheap)."""
    config = settings()
    return hasher(config.argon2_time_cost, config.argon2_memory_cost)


def init_extensions(app: Flask, config: Settings) -> dict[str, Any]:
    Database().init_app(app, config)
    csrf.init_app(app)
    login_manager.init_app(app)
    babel.init_app(app)
    limiter.init_app(app)
    return app.extensions
