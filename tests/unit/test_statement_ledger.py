"""The statement's figures against the database, and the job's once-only behaviour."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import (
    BillingAccount,
    Invoice,
    InvoiceStatus,
    Statement,
    StatementFormat,
    StatementState,
    UserAccountGrant,
    Work,
    WorkState,
)
from portal.runtime import GENERATE_STATEMENT, SEND_STATEMENT_READY
from portal.services.audit import RequestInfo
from portal.services.statements import ledger
from portal.services.storage import LocalStore
from portal.statements import generate, service
from portal.statements.generate import Failure
from tests.conftest import scoped_session, user_by_email

EARLY = date(2020, 1, 1)


def _accounts(session: Session) -> list[BillingAccount]:
    return list(session.scalars(select(BillingAccount).order_by(BillingAccount.name)))


def _today(app: Flask) -> date:
    today: date = app.extensions["portal.clock"].today()
    return today


def test_whole_history_closes_on_what_the_invoices_owe(app: Flask, connection: object) -> None:
    session = scoped_session(app, "admin@acme.test")
    today = _today(app)
    for section in ledger.sections(session, _accounts(session), EARLY, today, "USD"):
        lines = list(section.lines)
        assert section.opening == 0  # nothing before 2020
        assert len(lines) == section.line_count
        assert sum(line.debit for line in lines) == section.total_debit
        assert sum(line.credit for line in lines) == section.total_credit
        assert section.opening + section.total_debit - section.total_credit == section.closing
        assert (lines[-1].balance if lines else section.opening) == section.closing
        assert [line.day for line in lines] == sorted(line.day for line in lines)
        account = session.scalars(
            select(BillingAccount).where(BillingAccount.number == section.account_number)
        ).one()
        owed = session.scalar(
            select(func.coalesce(func.sum(Invoice.balance_due), 0)).where(
                Invoice.billing_account_id == account.id,
                Invoice.currency == section.currency,
                Invoice.status != InvoiceStatus.VOID,
            )
        )
        assert section.closing == owed
        assert section.aging.total == owed  # everything owed today is somewhere in the aging
    session.close()


def test_the_credit_note_is_a_line_of_its_own(app: Flask, connection: object) -> None:
    session = scoped_session(app, "admin@acme.test")
    (west,) = [a for a in _accounts(session) if a.name == "Acme West"]
    (section,) = ledger.sections(session, [west], EARLY, _today(app), "USD")
    credits = [line for line in section.lines if line.reference == "CN-301"]
    assert (
        len(credits) == 1 and credits[0].credit == 12_000 and "INV-1003" in credits[0].description
    )
    session.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=st.integers(0, 200), split=st.integers(0, 200), length=st.integers(0, 200))
def test_periods_chain(app: Flask, connection: object, first: int, split: int, length: int) -> None:
    """Any period's closing is the next period's opening; each period adds up."""
    session = scoped_session(app, "admin@acme.test")
    today = _today(app)
    start = today - timedelta(days=first + split + length)
    middle = start + timedelta(days=split)
    end = middle + timedelta(days=length)
    accounts = _accounts(session)
    before = ledger.sections(session, accounts, start, middle, "USD")
    after = ledger.sections(session, accounts, middle + timedelta(days=1), end, "USD")
    for one, two in zip(before, after, strict=True):
        assert (one.account_number, one.currency) == (two.account_number, two.currency)
        assert one.closing == two.opening
        assert one.opening + one.total_debit - one.total_credit == one.closing
        assert sum(1 for _ in one.lines) == one.line_count
    session.close()


def test_restricted_user_gets_only_their_account(app: Flask, connection: object) -> None:
    session = scoped_session(app, "ap@acme.test")
    sections = ledger.sections(session, _accounts(session), EARLY, _today(app), "USD")
    assert [s.account_name for s in sections] == ["Acme West"]
    session.close()


# the job -----------------------------------------------------------------------------------


def _request(
    app: Flask,
    db: Session,
    email: str = "admin@acme.test",
    fmt: StatementFormat = StatementFormat.CSV,
) -> Statement:
    runtime = app.extensions["portal.runtime"]
    user = user_by_email(db, email)
    session = scoped_session(app, email)
    statement = service.request_statement(
        runtime,
        session,
        user,
        start=EARLY,
        end=_today(app),
        account_ids=[a.id for a in _accounts(session)],
        fmt=fmt,
        locale="en_US",
        now=app.extensions["portal.clock"].now(),
        request=RequestInfo(),
    )
    session.commit()
    session.close()
    return statement


def _run(app: Flask, statement_id: int) -> str:
    with app.app_context():
        return generate.run(
            app.extensions["portal.runtime"],
            app.extensions["portal.db"].sessionmaker,
            statement_id,
            app.extensions["portal.clock"].now,
        )


def _load(db: Session, statement_id: int) -> Statement:
    db.expire_all()
    with tenancy.system(db):
        found = db.get(Statement, statement_id)
    assert found is not None
    return found


def _work(db: Session, job: str) -> int:
    with tenancy.system(db):
        return int(db.scalar(select(func.count(Work.id)).where(Work.job == job)) or 0)


def _files(app: Flask) -> list[Path]:
    root = Path(app.config["SETTINGS"].storage_dir) / "statements"
    return sorted(p for p in root.glob("*") if p.is_file()) if root.exists() else []


def test_running_twice_makes_one_file_and_one_mail(app: Flask, db: Session) -> None:
    before = set(_files(app))
    statement = _request(app, db)
    assert _run(app, statement.id) == "ready"
    assert _run(app, statement.id) == "already ready"
    ready = _load(db, statement.id)
    assert ready.state is StatementState.READY and ready.line_count
    assert _work(db, SEND_STATEMENT_READY) == 1
    made = set(_files(app)) - before
    assert [p.name for p in made] == [Path(str(ready.storage_key)).name]


def test_a_run_that_lost_leaves_no_file(app: Flask, db: Session) -> None:
    """A run begun, then overtaken by a later attempt (its worker seemed dead): the later one's
    file is the statement's, the first finds it superseded and removes its own."""
    before = set(_files(app))
    statement = _request(app, db)
    sessions = app.extensions["portal.db"].sessionmaker
    with app.app_context():
        first = generate._begin(sessions, statement.id, app.extensions["portal.clock"].now())
        assert not isinstance(first, str)
        built = generate._build(app.extensions["portal.runtime"], sessions, first)
    assert _run(app, statement.id) == "ready"  # attempt 2 wins
    with app.app_context():
        outcome = generate._finish(
            app.extensions["portal.runtime"],
            sessions,
            first,
            built,
            app.extensions["portal.clock"].now(),
        )
    assert outcome == "superseded"
    ready = _load(db, statement.id)
    assert ready.attempts == 2
    assert [p.name for p in set(_files(app)) - before] == [Path(str(ready.storage_key)).name]
    assert _work(db, SEND_STATEMENT_READY) == 1


def test_sweep_fails_what_would_stay_generating(app: Flask, db: Session) -> None:
    clock = app.extensions["portal.clock"]
    stuck = _request(app, db)
    sessions = app.extensions["portal.db"].sessionmaker
    with app.app_context():
        assert not isinstance(generate._begin(sessions, stuck.id, clock.now()), str)
    given_up = _request(app, db, fmt=StatementFormat.PDF)  # the same request would be `stuck`
    with tenancy.system(db):
        for row in db.scalars(select(Work).where(Work.subject == service.subject(given_up.id))):
            row.state = WorkState.FAILED
        db.commit()
    with tenancy.system(db):
        assert generate.settle(db, clock.now()) == 1  # its work gave up; the other has time
        assert _load(db, stuck.id).state is StatementState.RUNNING
        later = clock.now() + generate.TIMEOUT + timedelta(seconds=1)
        assert generate.settle(db, later) == 1
        db.commit()
    assert _load(db, stuck.id).error_code == Failure.TIMED_OUT.value
    assert _load(db, given_up.id).error_code == Failure.GAVE_UP.value
    assert _run(app, stuck.id) == "already failed"  # a late run changes nothing


def test_retry_and_expiry(app: Flask, client: object, db: Session) -> None:
    clock = app.extensions["portal.clock"]
    statement = _request(app, db)
    with tenancy.system(db):
        row = db.get(Statement, statement.id)
        assert row is not None
        row.state = StatementState.FAILED
        row.error_code = Failure.GAVE_UP.value
        db.commit()
    session = scoped_session(app, "admin@acme.test")
    again = service.get_own(session, statement.public_id, user_by_email(session, "admin@acme.test"))
    assert again is not None
    runtime = app.extensions["portal.runtime"]
    assert service.retry(runtime, session, again, clock.now())
    assert not service.retry(runtime, session, again, clock.now())  # a double click
    session.commit()
    session.close()
    assert _work(db, GENERATE_STATEMENT) == 2
    assert _run(app, statement.id) == "ready"
    ready = _load(db, statement.id)
    key = str(ready.storage_key)
    path = Path(app.config["SETTINGS"].storage_dir) / key
    assert path.exists()
    with app.app_context(), tenancy.system(db):
        assert generate.expire(db, clock.now()) == []
        later = clock.now() + app.config["SETTINGS"].statement_retention + timedelta(seconds=1)
        keys = generate.expire(db, later)
        assert keys == [key]
        db.commit()
    gone = _load(db, statement.id)
    assert gone.state is StatementState.EXPIRED and gone.storage_key is None
    assert path.exists()  # removed only once nothing points to it
    assert generate.remove_files(runtime, [*keys, "statements/no-such-file.pdf"]) == 1
    assert not path.exists()


def test_a_file_that_cannot_be_removed_leaves_the_others_to_go(tmp_path: Path) -> None:
    class Stuck(LocalStore):
        def delete(self, key: str) -> bool:
            if key.endswith("stuck.pdf"):
                raise PermissionError(key)
            return super().delete(key)

    store = Stuck(tmp_path)
    for name in ("a.pdf", "stuck.pdf", "b.pdf"):
        with store.writer(f"statements/{name}") as file:
            file.write(b"%PDF")
    runtime = SimpleNamespace(store=store)
    keys = ["statements/a.pdf", "statements/stuck.pdf", "statements/b.pdf"]
    assert generate.remove_files(runtime, keys) == 2  # type: ignore[arg-type]
    assert sorted(p.name for p in (tmp_path / "statements").iterdir()) == ["stuck.pdf"]


def test_an_account_taken_away_fails_the_statement(app: Flask, db: Session) -> None:
    statement = _request(app, db, "ap@acme.test")
    with tenancy.system(db):
        for grant in db.scalars(select(UserAccountGrant)):
            if grant.user_id == statement.requested_by_user_id:
                db.delete(grant)
        db.commit()
    assert _run(app, statement.id) == f"failed: {Failure.ACCESS.value}"
    failed = _load(db, statement.id)
    assert failed.state is StatementState.FAILED and failed.storage_key is None


@pytest.mark.parametrize("email", ["admin@acme.test"])
def test_progress_reaches_the_row(app: Flask, db: Session, email: str) -> None:
    seen: list[int] = []
    statement = _request(app, db, email)
    original = generate._ProgressWriter.__call__

    def spy(self: generate._ProgressWriter, done: int) -> None:
        seen.append(done)
        original(self, done)

    generate._ProgressWriter.__call__ = spy  # type: ignore[method-assign]
    try:
        assert _run(app, statement.id) == "ready"
    finally:
        generate._ProgressWriter.__call__ = original  # type: ignore[method-assign]
    assert seen and seen[-1] == _load(db, statement.id).line_count


def test_an_error_retries_then_fails_on_the_last_attempt(
    app: Flask, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the outbox: each failed run leaves the statement "retrying"; the last one fails
    it at once (not at the next sweep), and no file or mail is left behind."""
    from portal.services import outbox
    from portal.services.statements import render

    def broken(*_args: object) -> None:
        raise OSError("disk full")

    renderer = render.RENDERERS[StatementFormat.CSV]
    monkeypatch.setitem(
        render.RENDERERS, StatementFormat.CSV, dataclasses.replace(renderer, render=broken)
    )
    before = set(_files(app))
    statement = _request(app, db)
    clock = app.extensions["portal.clock"]
    queue = app.extensions["portal.jobs"]
    for attempt in range(1, outbox.MAX_ATTEMPTS + 1):
        assert queue.run_due(clock.now()) == 1
        row = _load(db, statement.id)
        if attempt < outbox.MAX_ATTEMPTS:
            assert row.state is StatementState.RUNNING
            assert row.error_code == Failure.RETRYING.value
            clock.advance(timedelta(minutes=6))  # past the longest back-off
    assert row.state is StatementState.FAILED and row.error_code == Failure.GAVE_UP.value
    assert _work(db, SEND_STATEMENT_READY) == 0
    assert set(_files(app)) == before


def test_a_file_left_by_an_attempt_killed_before_recording_it_goes(app: Flask, db: Session) -> None:
    """Attempt 1 wrote its file and died before recording it: attempt 2, once ready, removes
    it, and only the statement's own file stays."""
    clock = app.extensions["portal.clock"]
    runtime = app.extensions["portal.runtime"]
    statement = _request(app, db)
    with app.app_context():
        assert not isinstance(
            generate._begin(app.extensions["portal.db"].sessionmaker, statement.id, clock.now()),
            str,
        )
    orphan = generate.attempt_key(statement.public_id, 1, "csv")
    with runtime.store.writer(orphan) as out:
        out.write(b"half a statement")
    assert _run(app, statement.id) == "ready"
    ready = _load(db, statement.id)
    assert ready.attempts == 2 and ready.storage_key == generate.attempt_key(
        statement.public_id, 2, "csv"
    )
    assert runtime.store.stat(orphan) is None
    assert runtime.store.stat(ready.storage_key) is not None
