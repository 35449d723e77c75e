"""Flask extensions and the request-scoped database session."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g
from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from portal.config import Settings
from portal.db import make_engine, make_sessionmaker
from portal.services.mail import Mailer

csrf = CSRFProtect()
login_manager = LoginManager()
babel = Babel()
limiter = Limiter(key_func=get_remote_address, default_limits=[])


class Database:
    """One engine per app; one session per request (or job), closed at teardown."""

    engine: Engine
    sessionmaker: sessionmaker[Session]

    def init_app(self, app: Flask, settings: Settings) -> None:
        self.engine = make_engine(settings.database_url)
        self.sessionmaker = make_sessionmaker(self.engine)
        app.extensions["portal.db"] = self
        app.teardown_appcontext(self._close)

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


def init_extensions(app: Flask, config: Settings) -> dict[str, Any]:
    Database().init_app(app, config)
    csrf.init_app(app)
    login_manager.init_app(app)
    babel.init_app(app)
    limiter.init_app(app)
    return app.extensions
