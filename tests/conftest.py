"""Fixtures: one migrated, seeded database per backend; every test runs in a transaction that is
rolled back, so tests see the demo data and never each other's changes.

Backends: SQLite always; PostgreSQL where it answers (PORTAL_TEST_POSTGRES_URL, else DATABASE_URL,
else 127.0.0.1:5432). PORTAL_TEST_BACKENDS=sqlite|postgresql narrows the run. With CI=true a
skipped test fails the run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pyotp
import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from portal import clock, create_app, migrate, tenancy
from portal.db import make_engine
from portal.extensions import limiter
from portal.models import PortalUser
from portal.runtime import REFUSED_AT
from portal.services import seed
from portal.services.passwords import hasher
from tests import factories
from tests.work import ManualQueue

CI = os.environ.get("CI", "").lower() == "true"
TEST_SECRET = factories.SECRET_KEY
COOKIE = "__Host-portal"  # the session cookie outside development
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost": 64}
BACKENDS = [
    b.strip()
    for b in os.environ.get("PORTAL_TEST_BACKENDS", "sqlite,postgresql").split(",")
    if b.strip()
]
POSTGRES_ADMIN_URL = os.environ.get(
    "PORTAL_TEST_POSTGRES_URL",
    os.environ.get("DATABASE_URL", "")
    if os.environ.get("DATABASE_URL", "").startswith("postgresql")
    else "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
)

_skipped: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the message catalogs when a .po is newer than its .mo (as `make test` does)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    root = Path(__file__).resolve().parent.parent / "translations"
    for po in root.glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            with po.open("rb") as source:
                catalog = read_po(source, locale=po.parent.parent.name)
            with mo.open("wb") as target:
                write_mo(target, catalog)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if CI and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if CI and _skipped:
        terminalreporter.write_line(
            f"CI=true: {len(_skipped)} skipped test(s) fail the run: nothing may be skipped in CI",
            red=True,
        )


@dataclass
class Backend:
    name: str
    url: str
    today: date
    storage: Path


def _postgres_database() -> Iterator[str]:
    admin_url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+psycopg")
    name = f"portal_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:
        pytest.skip(f"PostgreSQL is not reachable at {admin_url.render_as_string()}: {error}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrate_and_seed(url: str, storage: Path, today: date) -> None:
    """Build the schema and commit the demo data in the database at `url`."""
    engine = make_engine(url)
    with engine.begin() as connection:
        migrate.upgrade(connection=connection)
    with Session(engine) as session:
        seed.DemoSeeder(
            session,
            today=today,
            ph=hasher(FAST_ARGON2["argon2_time_cost"], FAST_ARGON2["argon2_memory_cost"]),
            secret_key=TEST_SECRET,
            storage_dir=storage,
        ).run()
        session.commit()
    engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A migrated database holding the demo data, committed once for the whole session."""
    storage = tmp_path_factory.mktemp(f"storage-{request.param}")
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path_factory.mktemp('db') / 'portal.db'}"])
    elif request.param == "postgresql":
        urls = _postgres_database()
    else:
        raise ValueError(f"unknown backend {request.param}")
    url = next(urls)
    today = clock.today()
    migrate_and_seed(url, storage, today)
    yield Backend(request.param, url, today, storage)
    for _ in urls:  # finish the generator: drops the PostgreSQL database
        pass


def make_app(backend: Backend, **overrides: Any) -> Flask:
    """An app on `backend`. Without a `redis_url` its work travels nowhere: tests run the
    outbox's due work by hand (`app.extensions["portal.jobs"].run_due(now)`, tests/work.py)."""
    app = create_app(
        {
            "env": "testing",
            "secret_key": TEST_SECRET,
            "database_url": backend.url,
            "storage_dir": str(backend.storage),
            "mail_dir": str(backend.storage / "mail"),
            "flags_refresh_seconds": 0,  # every request reads the flags: tests flip them
            **FAST_ARGON2,
            **overrides,
        }
    )
    if not overrides.get("redis_url"):
        app.extensions["portal.jobs"] = ManualQueue(app)
    return app


def committed_postgres_app(tmp_path_factory: pytest.TempPathFactory, label: str) -> Iterator[Flask]:
    """An app on a PostgreSQL database of its own, migrated and seeded, whose rows tests commit
    (the concurrency tests' module-scoped `pg_app`: two sessions must see each other's commits)."""
    urls = _postgres_database()
    url = next(urls)
    storage: Path = tmp_path_factory.mktemp(label)
    migrate_and_seed(url, storage, date.today())
    app = make_app(Backend("postgresql", url, date.today(), storage))
    yield app
    app.extensions["portal.db"].engine.dispose()
    for _ in urls:
        pass


@pytest.fixture(scope="session")
def app(backend: Backend) -> Iterator[Flask]:
    flask_app = make_app(backend)
    yield flask_app
    flask_app.extensions["portal.db"].engine.dispose()


@contextmanager
def transactional(app: Flask) -> Iterator[Connection]:
    """Everything `app` does happens in one transaction, rolled back afterwards."""
    db = app.extensions["portal.db"]
    conn = db.engine.connect()
    outer = conn.begin()
    original = db.sessionmaker
    db.sessionmaker = sessionmaker(
        bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    app.extensions["portal.clock"] = clock.Clock()
    queue = app.extensions["portal.jobs"]
    if isinstance(queue, ManualQueue):
        queue.handed.clear()  # what an earlier test handed over (its work was rolled back)
    app.extensions.pop(REFUSED_AT, None)  # nor a refusal of the queue another test caused
    limiter.reset()
    try:
        yield conn
    finally:
        db.sessionmaker = original
        outer.rollback()
        conn.close()


@pytest.fixture
def connection(app: Flask) -> Iterator[Connection]:
    with transactional(app) as conn:
        yield conn


@pytest.fixture
def db(app: Flask, connection: Connection) -> Iterator[Session]:
    """A session on the test transaction, with no scope bound (bind one, or use system())."""
    session = app.extensions["portal.db"].sessionmaker()
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def client(app: Flask, connection: Connection) -> FlaskClient:
    return app.test_client()


def user_by_email(session: Session, email: str) -> PortalUser:
    with tenancy.system(session):
        user: PortalUser = session.query(PortalUser).filter_by(email=email).one()
        _ = user.grants, user.company
    return user


def scoped_session(app: Flask, email: str) -> Session:
    """A new session on the test transaction bound to what `email` may see."""
    session: Session = app.extensions["portal.db"].sessionmaker()
    tenancy.bind(session, tenancy.scope_for_user(user_by_email(session, email)))
    return session


_ISOLATION = re.compile(r'<bdi dir="(?:ltr|rtl|auto)">|</bdi>|[\u2066-\u2069]')


def readable(html: str) -> str:
    """A page's text as a sentence reads, without the isolation of amounts and dates
    (`<bdi>` in markup, Unicode isolates in sentences built in Python)."""
    return _ISOLATION.sub("", html)


_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = _CSRF.search(page) or re.search(r'"X-CSRFToken": "([^"]+)"', page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def totp_code(app: Flask, secret: str = seed.DEMO_TOTP_SECRET) -> str:
    return pyotp.TOTP(secret).at(app.extensions["portal.clock"].now())


class Auth:
    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.app = app
        self.client = client

    def login(
        self, email: str = "admin@acme.test", password: str = seed.DEMO_PASSWORD, **extra: str
    ) -> Any:
        token = csrf_token(self.client)
        return self.client.post(
            "/login", data={"csrf_token": token, "email": email, "password": password, **extra}
        )

    def code(self, code: str | None = None) -> Any:
        token = csrf_token(self.client, "/login/mfa")
        return self.client.post(
            "/login/mfa", data={"csrf_token": token, "code": code or totp_code(self.app)}
        )

    def sign_in(self, email: str = "admin@acme.test", **extra: str) -> Any:
        """Both factors. Moves the clock a step on so no code is ever a replay."""
        self.app.extensions["portal.clock"].advance(timedelta(seconds=30))
        first = self.login(email, **extra)
        assert first.status_code == 302 and first.headers["Location"] == "/login/mfa", first
        second = self.code()
        assert second.status_code == 302, second.get_data(as_text=True)
        return second

    def logout(self) -> Any:
        token = csrf_token(self.client, "/portal/dashboard")
        return self.client.post("/logout", data={"csrf_token": token})


@pytest.fixture
def auth(app: Flask, client: FlaskClient) -> Auth:
    return Auth(app, client)


@pytest.fixture
def signed_in(request: pytest.FixtureRequest, auth: Auth) -> Auth:
    """Signed in with both factors, as admin@acme.test unless a test asks for someone else:
    `@pytest.mark.parametrize("signed_in", ["ap@acme.test"], indirect=True)`."""
    auth.sign_in(getattr(request, "param", "admin@acme.test"))
    return auth


class QueryCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Transaction bookkeeping and the per-transaction tenant setting are not data queries.
        skip = ("SAVEPOINT", "RELEASE", "ROLLBACK", "SELECT SET_CONFIG")
        if not statement.lstrip().upper().startswith(skip):
            self.statements.append(statement)

    @property
    def count(self) -> int:
        return len(self.statements)


@pytest.fixture
def count_queries(connection: Connection) -> Iterator[QueryCounter]:
    counter = QueryCounter()
    event.listen(connection, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(connection, "before_cursor_execute", counter)


# mail through a real SMTP server ---------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@contextmanager
def smtp_server(
    app: Flask, monkeypatch: pytest.MonkeyPatch, handler: Inbox | None = None
) -> Iterator[Inbox]:
    """A real SMTP server on loopback that `app` sends its mail to, for the block (`handler`:
    an Inbox that answers otherwise)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = handler or Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings = dataclasses.replace(app.config["SETTINGS"], mail_url=f"smtp://127.0.0.1:{port}")
    monkeypatch.setitem(app.config, "SETTINGS", settings)
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def smtp(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    with smtp_server(app, monkeypatch) as inbox:
        yield inbox
