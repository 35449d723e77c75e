"""The database keeps `invoice_tallies` equal to a count of the invoices, whoever writes them.

A Hypothesis state machine of sorts: random sequences of inserts, ORM changes, bulk UPDATEs
(as the payment flow makes), deletes and account moves, on both databases; after every step the
tallies the triggers kept equal `tallies.recount`, the same rows computed from the invoices.
"""

from __future__ import annotations

import threading
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, delete, inspect, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from portal import migrate, tenancy
from portal.db import make_engine, make_sessionmaker, retry_on_conflict
from portal.models import SETTLED_DUE, Invoice, InvoiceStatus, InvoiceTally
from portal.services import tallies
from tests.conftest import _postgres_database, migrate_and_seed, scoped_session
from tests.factories import make_account, make_company, make_invoice
from tests.web.test_payments_references import fresh_url

__all__ = ["fresh_url"]  # a fixture of this module too

STATUSES = list(InvoiceStatus)

step = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 1), st.integers(1, 500), st.integers(-90, 90)),
    st.tuples(st.just("pay"), st.integers(0, 5), st.integers(0, 100)),  # percent of the total
    st.tuples(st.just("status"), st.integers(0, 5), st.sampled_from(STATUSES)),
    st.tuples(st.just("bulk"), st.integers(0, 5), st.integers(0, 100), st.sampled_from(STATUSES)),
    st.tuples(st.just("due"), st.integers(0, 5), st.integers(-120, 120)),
    st.tuples(st.just("move"), st.integers(0, 5)),
    st.tuples(st.just("currency"), st.integers(0, 5), st.sampled_from(["USD", "EUR"])),
    st.tuples(st.just("delete"), st.integers(0, 5)),
    st.tuples(st.just("touch"), st.integers(0, 5)),  # a change the tallies do not follow
)


def _apply(db: Session, accounts: list[Any], invoices: list[Invoice], op: tuple[Any, ...]) -> None:
    today = date.today()
    kind = op[0]
    if kind == "insert":
        _, which, amount, due = op
        invoices.append(make_invoice(db, accounts[which], amount, due=due))
        return
    if not invoices:
        return
    invoice = invoices[op[1] % len(invoices)]
    if kind == "pay":
        invoice.amount_paid = invoice.total * op[2] // 100
    elif kind == "status":
        invoice.status = op[2]
    elif kind == "bulk":
        paid = invoice.total * op[2] // 100
        db.execute(
            update(Invoice)
            .where(Invoice.id == invoice.id)
            .values(amount_paid=paid, status=op[3], version=Invoice.version + 1)
            .execution_options(synchronize_session=False)
        )
        db.expire(invoice)
    elif kind == "due":
        invoice.due_date = max(invoice.issue_date, today + timedelta(days=op[2]))
    elif kind == "move":
        ours = [a for a in accounts if a.company_id == invoice.company_id]
        invoice.billing_account_id = next(a.id for a in ours if a.id != invoice.billing_account_id)
    elif kind == "currency":
        invoice.currency = op[2]
    elif kind == "delete":
        invoices.remove(invoice)
        db.execute(delete(Invoice).where(Invoice.id == invoice.id))
        db.expunge(invoice)
    elif kind == "touch":
        invoice.notes = invoice.notes + "."
    db.flush()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, max_size=25))
def test_tallies_follow_every_change_of_an_invoice(
    app: Any, connection: Connection, steps: list[tuple[Any, ...]]
) -> None:
    # Each example in a session of its own, on a savepoint of the test's transaction.
    db: Session = app.extensions["portal.db"].sessionmaker()
    try:
        with tenancy.system(db):
            company = make_company(db)
            accounts = [make_account(db, company, "One"), make_account(db, company, "Two")]
            invoices: list[Invoice] = []
            assert tallies.kept(db) == tallies.recount(db)
            for op in steps:
                _apply(db, accounts, invoices, op)
                assert tallies.kept(db) == tallies.recount(db), op
                # No row outlives what it counts: the dashboard reads only live rows.
                assert not db.scalars(
                    select(InvoiceTally).where(InvoiceTally.invoice_count == 0)
                ).first(), op
    finally:
        db.rollback()
        db.close()


def test_the_check_can_fail(db: Session) -> None:
    """A tally changed behind the triggers' back no longer matches the recount."""
    with tenancy.system(db):
        row = db.scalars(select(InvoiceTally).where(InvoiceTally.invoice_count > 0)).first()
        assert row is not None
        db.execute(
            update(InvoiceTally)
            .where(
                InvoiceTally.billing_account_id == row.billing_account_id,
                InvoiceTally.currency == row.currency,
                InvoiceTally.status == row.status,
                InvoiceTally.due_date == row.due_date,
            )
            .values(invoice_count=InvoiceTally.invoice_count + 1)
        )
        assert tallies.kept(db) != tallies.recount(db)


def test_only_what_is_owed_keeps_its_due_date(db: Session) -> None:
    with tenancy.system(db):
        company = make_company(db)
        account = make_account(db, company)
        owed = make_invoice(db, account, 100, due=-5)
        make_invoice(db, account, 100, due=-5, balance=0)
        db.flush()
        rows = {
            (r.status, r.due_date): (r.invoice_count, r.balance)
            for r in db.scalars(
                select(InvoiceTally).where(InvoiceTally.billing_account_id == account.id)
            )
        }
    assert rows == {("open", owed.due_date): (1, 100), ("paid", SETTLED_DUE): (1, 0)}


@pytest.mark.parametrize("email", ["admin@acme.test", "ap@acme.test"])
def test_each_user_reads_only_the_tallies_of_their_scope(
    app: Any, connection: Connection, email: str
) -> None:
    session = scoped_session(app, email)
    try:
        scope = tenancy.current_scope(session)
        accounts = {key[0] for key in tallies.kept(session)}
        assert accounts
        if scope.account_ids is not None:
            assert accounts <= scope.account_ids
        assert tallies.kept(session) == tallies.recount(session)
    finally:
        session.close()


def test_the_migration_counts_the_invoices_already_there_and_goes_back(
    fresh_url: str, tmp_path: Path
) -> None:
    migrate_and_seed(fresh_url, tmp_path / "files", date.today())
    config = migrate.alembic_config(fresh_url)
    command.downgrade(config, "0009")  # no tallies, no triggers
    engine = make_engine(fresh_url)
    with engine.begin() as connection:
        assert "invoice_tallies" not in inspect(connection).get_table_names()
        if engine.dialect.name == "postgresql":  # row-level security: a system change
            connection.execute(text("SELECT set_config('app.system', 'on', true)"))
        connection.execute(text("UPDATE invoices SET amount_paid = total WHERE id % 2 = 0"))
    command.upgrade(config, "head")
    with Session(engine) as session, tenancy.system(session):
        kept = tallies.kept(session)
        assert kept and kept == tallies.recount(session)
    engine.dispose()


def test_writers_crossing_on_tallies_are_retried_not_refused(tmp_path: Path) -> None:
    """Two PostgreSQL writers that change invoices whose tally rows they reach in crossed
    order deadlock; PostgreSQL ends one, and `retry_on_conflict` starts it over: both land."""
    urls = _postgres_database()
    url = next(urls)
    try:
        migrate_and_seed(url, tmp_path / "files", date.today())
        engine = make_engine(url)
        make = make_sessionmaker(engine)
        with make() as session, tenancy.system(session):
            company = make_company(session)
            account = make_account(session, company)
            # Ids ascending; due dates d1, d2, d2, d1: A reaches (d1, d2), B (d2, d1).
            numbers = [make_invoice(session, account, 100, due=d).id for d in (10, 20, 20, 10)]
            session.commit()
        barrier = threading.Barrier(2, timeout=30)
        attempts = {"A": 0, "B": 0}
        refused: list[str] = []

        def writer(name: str, first: int, second: int) -> None:
            with make() as session:
                tenancy.bind(session, tenancy.Scope(company.id))

                def work() -> None:
                    attempts[name] += 1
                    for n, invoice_id in enumerate((first, second)):
                        session.execute(
                            update(Invoice)
                            .where(Invoice.id == invoice_id)
                            .values(amount_paid=Invoice.amount_paid + 10)
                        )
                        if n == 0 and attempts[name] == 1:
                            barrier.wait()  # both hold their first tally row
                    session.commit()

                try:
                    retry_on_conflict(session, work)
                except OperationalError:
                    refused.append(name)

        threads = [
            threading.Thread(target=writer, args=("A", numbers[0], numbers[1])),
            threading.Thread(target=writer, args=("B", numbers[2], numbers[3])),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert refused == []
        assert sorted(attempts.values()) == [1, 2]  # one was ended by the deadlock, once
        with make() as session, tenancy.system(session):
            paid = session.scalars(select(Invoice.amount_paid).where(Invoice.id.in_(numbers)))
            assert list(paid) == [10, 10, 10, 10]
            assert tallies.kept(session) == tallies.recount(session)
        engine.dispose()
    finally:
        for _ in urls:
            pass
