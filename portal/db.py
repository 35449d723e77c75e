"""Plain SQLAlchemy 2: engine, session factory and the declarative base.

Usable without Flask (jobs, CLI, tests). The Flask glue lives in portal/web.py.
"""

from __future__ import annotations

import enum
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Enum,
    MetaData,
    String,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands them back naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_public_id(prefix: str) -> str:
    """An opaque, unguessable identifier for URLs, never the sequential key."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"


class PublicIdMixin:
    """Rows that appear in URLs carry an opaque public id."""

    public_id_prefix: str = "obj"

    public_id: Mapped[str] = mapped_column(String(40), unique=True, index=False)

    def __init__(self, **kwargs: Any) -> None:
        if "public_id" not in kwargs:
            kwargs["public_id"] = new_public_id(self.public_id_prefix)
        super().__init__(**kwargs)


def str_enum(cls: type[enum.Enum], name: str) -> Enum:
    """An enum stored as its value ("customer.admin"), checked by a constraint on every backend."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


# Seconds to wait for PostgreSQL to accept a connection: a host that drops packets (rather than
# refusing) would otherwise hold a request for the system's TCP timeout, minutes, past the web
# server's own timeout; with it, a request's three attempts give up within about 16 s.
CONNECT_TIMEOUT = 5


def make_engine(url: str, *, echo: bool = False) -> Engine:
    parsed = make_url(url)
    # hide_parameters: a database error's text (logged with its traceback) shows the statement
    # but never the values bound to it (a password hash, a token digest, an e-mail address).
    kwargs: dict[str, Any] = {"echo": echo, "future": True, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in {"", ":memory:"}:
            kwargs["poolclass"] = StaticPool
        else:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False}
    elif parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(False))
        # A pooled connection is checked (a cheap round trip) before each use: one that the
        # server dropped (a restart, a failover) is replaced there, unseen by the request.
        kwargs["pool_pre_ping"] = True
        if "connect_timeout" not in parsed.query:  # DATABASE_URL may say otherwise
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "before_cursor_execute", _sqlite_before_execute, retval=True)
    return engine


# SQLite and concurrency -----------------------------------------------------------------------
#
# SQLite (what `make run` uses) has one write lock for the whole database. In WAL mode readers
# never wait, but a transaction that has read and then writes must upgrade its snapshot, and if
# another connection committed in between SQLite refuses at once with "database is locked"
# (SQLITE_BUSY_SNAPSHOT): no busy timeout helps, because waiting cannot make an old snapshot
# new. So no transaction here ever upgrades:
#
# - A unit of work that writes (a request with a non-safe method, a job) says so with
#   `unit_of_work(writes=True)`; its transactions begin with BEGIN IMMEDIATE, which takes the
#   write lock first (waiting up to BUSY_TIMEOUT_MS for it) and so reads and writes as one.
# - Anything else reads in plain deferred transactions, which never wait. Should one of them
#   write (a GET recording Portal.InvoiceViewed, the once-a-minute session touch), its read
#   transaction ends right before the first write and a new one begins with BEGIN IMMEDIATE:
#   what it read stays loaded, the write waits for the lock instead of failing.
#
# PostgreSQL has row locks and none of these listeners: nothing changes there.

BUSY_TIMEOUT_MS = 15_000  # how long a writer waits for SQLite's write lock (a web request's span)
_WRITES: ContextVar[bool] = ContextVar("portal_db_writes", default=False)
_TRANSACTION = "portal.sqlite_transaction"  # in Connection.info: "read" or "write"
_READ_ONLY = frozenset({"SELECT", "PRAGMA", "EXPLAIN", "VALUES"})
_CONTROL = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"})
_DML = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
# Extended result codes a fresh start can cure: a stale snapshot, a WAL being recovered. Plain
# SQLITE_BUSY (5) after BEGIN IMMEDIATE means the lock stayed taken for the whole busy timeout.
_RETRYABLE = frozenset({517, 261})  # SQLITE_BUSY_SNAPSHOT, SQLITE_BUSY_RECOVERY


def begin_unit(*, writes: bool) -> Token[bool]:
    """Start a unit of work (see `unit_of_work`); hand the token to `end_unit`."""
    return _WRITES.set(writes)


def end_unit(token: Token[bool]) -> None:
    _WRITES.reset(token)


@contextmanager
def unit_of_work(*, writes: bool) -> Iterator[None]:
    """Declare what the code inside does: with `writes=True` every transaction it begins on
    SQLite takes the write lock at its start (BEGIN IMMEDIATE), so a read-then-write is never
    refused and two writers never interleave. Requests declare it by their method, jobs always
    write; undeclared code reads, and its writes go apart (see above)."""
    token = begin_unit(writes=writes)
    try:
        yield
    finally:
        end_unit(token)


def commit_now(session: Session, reason: str) -> None:
    """Commit in the middle of a unit of work, deliberately. A request's work commits once, at
    its edge (portal/web.py); a commit anywhere else is one of the few that must stand before
    what follows, and says why in `reason` (so a reader, and a grep, finds every one)."""
    del reason  # documentation at the call site
    session.commit()


def sqlite_snapshot_conflict(error: OperationalError) -> bool:
    """SQLite refused a write that a fresh start would get through (a stale snapshot)."""
    return getattr(error.orig, "sqlite_errorcode", None) in _RETRYABLE


# PostgreSQL ended the transaction to break a cycle of waits (two writers touching the same
# rows, e.g. the invoice tallies its triggers keep, in crossed order) or a serialization failure:
# the other writer went through, and a fresh start will too.
_POSTGRES_RETRYABLE = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


def worth_retrying(error: OperationalError) -> bool:
    """A refused write that starting the unit over would get through, on either database."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlite_snapshot_conflict(error) or sqlstate in _POSTGRES_RETRYABLE


def retry_on_conflict(session: Session, work: Callable[[], T], attempts: int = 8) -> T:
    """Run `work` (which writes), starting over should the database refuse it for a conflict
    that a fresh start cures (`worth_retrying`: SQLite's stale snapshot, PostgreSQL's deadlock).
    The single retry mechanism, for units that might run outside a declared writing unit;
    whatever `work` does must be safe to redo after a rollback (a gateway call is: the
    idempotency key answers with the same charge)."""
    for attempt in range(attempts):
        try:
            return work()
        except OperationalError as error:
            session.rollback()
            if attempt == attempts - 1 or not worth_retrying(error):
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


# The database went away: PostgreSQL restarted or stopped (its backends are told "terminating
# connection due to administrator command" and their sockets closed), refuses connections, is
# still starting up, or has no connection slot left. SQLAlchemy marks an error on a connection
# its dialect found closed or broken as `connection_invalidated` (and recycles the pool's older
# connections: the next checkout connects afresh); an error while connecting carries no
# connection, so psycopg's own classification decides: no SQLSTATE (the server never answered),
# a connection exception (class 08), or one of these.
_UNAVAILABLE = frozenset(
    {
        "57P01",  # admin_shutdown: "terminating connection due to administrator command"
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: "the database system is starting up / shutting down"
        "53300",  # too_many_connections
    }
)


def connection_lost(error: BaseException) -> bool:
    """Did `error` come from losing the database (a dropped connection, or none to be had),
    rather than from what the statement asked? Such work may be started over on a new connection
    (portal/web.py retries a reading request) and is answered "briefly unavailable" (503)."""
    if isinstance(error, PendingRollbackError) and error.__context__ is not None:
        # Raised while the failure itself was being handled (a `finally` that used the
        # session): the failure is what counts.
        return connection_lost(error.__context__)
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if not isinstance(error, OperationalError):
        return False
    original = error.orig
    if type(original).__module__.split(".")[0] != "psycopg":
        return False  # SQLite: a closed database shows as connection_invalidated above
    state: str | None = getattr(original, "sqlstate", None)
    return state is None or state.startswith("08") or state in _UNAVAILABLE


def holds_sqlite_write_lock(connection: Connection) -> bool:
    """Does this SQLite connection's transaction hold the database's write lock? A writer's
    took it when it began (BEGIN IMMEDIATE); any other's took it with its first write. Either
    keeps it until the transaction ends, savepoints rolled back or not."""
    return connection.info.get(_TRANSACTION) == "write"


def _sqlite_begin(connection: Connection) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT (SQLAlchemy's documented recipe:
    # the driver runs in autocommit and we say BEGIN ourselves), and we choose which BEGIN.
    writes = _WRITES.get()
    connection.info[_TRANSACTION] = "write" if writes else "read"
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def _writes_data(statement: str) -> bool:
    words = statement.lstrip().split(None, 1)
    keyword = words[0].upper() if words else ""
    if keyword in _READ_ONLY or keyword in _CONTROL:
        return False
    if keyword == "WITH":
        return bool(_DML.search(statement))
    return True  # INSERT, UPDATE, DELETE, REPLACE, DDL


def _sqlite_before_execute(
    connection: Connection,
    _cursor: Any,
    statement: str,
    parameters: Any,
    _context: Any,
    _executemany: bool,
) -> tuple[str, Any]:
    """A reading transaction's first write: end the read, take the lock, then write."""
    if connection.info.get(_TRANSACTION) == "read" and _writes_data(statement):
        connection.info[_TRANSACTION] = "write"
        # Under a SAVEPOINT (the tests' shared transaction) the outer transaction cannot be
        # ended: it upgrades in place, as it did before. Nothing else holds one across a read.
        if not connection.in_nested_transaction():
            driver = connection.connection.dbapi_connection
            assert driver is not None
            driver.execute("COMMIT")  # it wrote nothing: this only ends the read snapshot
            driver.execute("BEGIN IMMEDIATE")
    return statement, parameters


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)
