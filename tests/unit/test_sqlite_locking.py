"""SQLite under concurrency, deterministically: two real connections to one database file,
interleaved by hand. The failure these guard against is SQLITE_BUSY_SNAPSHOT ("database is
locked" at once, whatever the busy timeout): a transaction that read, then writes after another
connection committed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from portal.db import (
    BUSY_TIMEOUT_MS,
    make_engine,
    make_sessionmaker,
    retry_on_conflict,
    sqlite_snapshot_conflict,
    unit_of_work,
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'locking.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER)"))
        connection.execute(text("CREATE TABLE seen (id INTEGER PRIMARY KEY, note TEXT)"))
        connection.execute(text("INSERT INTO counter VALUES (1, 0)"))
    yield engine
    engine.dispose()


def _value(session: Session) -> int:
    return int(session.execute(text("SELECT value FROM counter WHERE id = 1")).scalar_one())


def test_a_reader_that_writes_after_another_commit_is_not_refused(engine: Engine) -> None:
    """A GET reads, someone else commits, then the GET records something (InvoiceViewed)."""
    factory = make_sessionmaker(engine)
    with factory() as reader, factory() as other:
        assert _value(reader) == 0  # the reader's snapshot is now open
        other.execute(text("UPDATE counter SET value = value + 1 WHERE id = 1"))
        other.commit()
        reader.execute(text("INSERT INTO seen (note) VALUES ('viewed')"))  # refused before
        reader.commit()
        assert _value(reader) == 1
        assert reader.execute(text("SELECT count(*) FROM seen")).scalar_one() == 1


def test_a_reader_writes_only_while_it_holds_the_write_lock(engine: Engine) -> None:
    """Its write waits for a writer that holds the lock (instead of failing) and goes after."""
    factory = make_sessionmaker(engine)
    reader = factory()
    assert _value(reader) == 0
    holder = factory()
    with unit_of_work(writes=True):
        holder.execute(text("UPDATE counter SET value = 5 WHERE id = 1"))
    done = threading.Event()

    def write() -> None:
        reader.execute(text("UPDATE counter SET value = value + 1 WHERE id = 1"))
        reader.commit()
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert not done.wait(0.3)  # waiting for the lock, not refused
    holder.commit()
    thread.join(10)
    assert done.is_set()
    with factory() as check:
        assert _value(check) == 6  # it read the committed 5 once it held the lock
    reader.close()
    holder.close()


def test_a_writing_unit_takes_the_write_lock_when_it_begins(engine: Engine) -> None:
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    factory = make_sessionmaker(engine)
    with unit_of_work(writes=True), factory() as writer:
        _value(writer)  # only a read so far, yet the lock is taken
        assert statements[:2] == ["BEGIN IMMEDIATE", "SELECT value FROM counter WHERE id = 1"]
        probe = sqlite3.connect(engine.url.database or "", isolation_level=None, timeout=0.05)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            probe.execute("BEGIN IMMEDIATE")
        probe.close()
    statements.clear()
    with factory() as reader:  # outside a writing unit: a plain deferred read
        _value(reader)
    assert statements[0] == "BEGIN"


def test_two_writing_units_that_read_then_write_run_one_after_the_other(engine: Engine) -> None:
    """Read-modify-write in two units: the second waits for the first and reads its result."""
    factory = make_sessionmaker(engine)
    first_read = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with unit_of_work(writes=True), factory() as session:
                value = _value(session)
                first_read.set()
                time.sleep(0.3)  # the second unit starts meanwhile
                session.execute(
                    text("UPDATE counter SET value = :v WHERE id = 1"), {"v": value + 1}
                )
                session.commit()
        except BaseException as error:
            errors.append(error)

    def second() -> None:
        first_read.wait(10)
        try:
            with unit_of_work(writes=True), factory() as session:
                value = _value(session)
                session.execute(
                    text("UPDATE counter SET value = :v WHERE id = 1"), {"v": value + 1}
                )
                session.commit()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with factory() as session:
        assert _value(session) == 2  # neither increment lost


def test_the_tests_shared_transaction_still_works(engine: Engine) -> None:
    """conftest's fixture: one connection in a transaction, sessions on savepoints."""
    connection = engine.connect()
    outer = connection.begin()
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
    for writes in (False, True):
        with unit_of_work(writes=writes), factory() as session:
            assert _value(session) in (0, 1)
            session.execute(text("UPDATE counter SET value = 1 WHERE id = 1"))
            session.commit()
    outer.rollback()
    connection.close()
    with make_sessionmaker(engine)() as session:
        assert _value(session) == 0  # rolled back, as the fixture needs


def test_busy_timeout_suits_a_web_request(engine: Engine) -> None:
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == BUSY_TIMEOUT_MS
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    assert 5_000 < BUSY_TIMEOUT_MS <= 30_000


def test_only_a_stale_snapshot_is_retried(engine: Engine, tmp_path: Path) -> None:
    """A stale snapshot is retried on a fresh one; a lock held past the busy timeout is not
    (that would only wait as long again)."""
    factory = make_sessionmaker(engine)
    raw = sqlite3.connect(tmp_path / "locking.db", isolation_level=None, timeout=0.05)
    raw.execute("BEGIN")
    raw.execute("SELECT value FROM counter").fetchall()
    with factory() as other:
        other.execute(text("UPDATE counter SET value = 7 WHERE id = 1"))
        other.commit()
    with pytest.raises(sqlite3.OperationalError) as stale:
        raw.execute("UPDATE counter SET value = 8")
    raw.execute("ROLLBACK")
    raw.execute("BEGIN IMMEDIATE")  # now hold the lock
    with factory() as blocked, pytest.raises(OperationalError) as busy:
        blocked.execute(text("PRAGMA busy_timeout = 50"))
        blocked.execute(text("UPDATE counter SET value = 9 WHERE id = 1"))
    raw.execute("ROLLBACK")
    raw.close()
    assert sqlite_snapshot_conflict(OperationalError("", {}, stale.value))
    assert not sqlite_snapshot_conflict(busy.value)

    attempts: list[int] = []

    def work() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise OperationalError("UPDATE", {}, stale.value)
        return 42

    with factory() as session:
        assert retry_on_conflict(session, work) == 42
    assert len(attempts) == 2

    def timed_out() -> int:
        attempts.append(1)
        raise busy.value

    attempts.clear()
    with factory() as session, pytest.raises(OperationalError):
        retry_on_conflict(session, timed_out)
    assert len(attempts) == 1


def test_a_readers_write_rolls_back_whole(engine: Engine) -> None:
    """Ending the read to write apart commits nothing by itself: a rollback undoes the write."""
    factory = make_sessionmaker(engine)
    with factory() as session:
        assert session.scalars(select(text("1"))).one() == 1
        session.execute(text("INSERT INTO seen (note) VALUES ('a')"))
        session.rollback()  # the write transaction rolls back whole
    with factory() as session:
        assert session.execute(text("SELECT count(*) FROM seen")).scalar_one() == 0
