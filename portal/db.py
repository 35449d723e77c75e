"""Plain SQLAlchemy 2: engine, session factory and the declarative base.

Usable without Flask (jobs, CLI, tests). The Flask glue lives in portal/web.py.
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import DateTime, Engine, Enum, MetaData, String, TypeDecorator, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
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


def make_engine(url: str, *, echo: bool = False) -> Engine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
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
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def sqlite_snapshot_conflict(error: OperationalError) -> bool:
    """SQLite refused a write because another connection wrote since this transaction's first
    read ("database is locked" without waiting): rolling back and trying again succeeds."""
    return "database is locked" in str(error.orig) or "database is busy" in str(error.orig)


def retry_on_sqlite_conflict(session: Session, work: Callable[[], T], attempts: int = 8) -> T:
    """Run `work` (which writes), starting over on a fresh snapshot when SQLite refuses the
    write because another connection wrote first. Whatever `work` does must be safe to redo
    after a rollback (a gateway call is: the idempotency key answers with the same charge)."""
    for attempt in range(attempts):
        try:
            return work()
        except OperationalError as error:
            session.rollback()
            if attempt == attempts - 1 or not sqlite_snapshot_conflict(error):
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


def _sqlite_begin(connection: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT; SQLAlchemy's documented recipe.
    connection.exec_driver_sql("BEGIN")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)
