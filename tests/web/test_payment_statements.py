"""How many SQL statements paying costs: the confirm POST of Make Payment by the saved Visa on
the sandbox gateway, which charges at once and answers with the payment's terminal status.

Run with `-s` to see each statement, grouped in the order the flow asks for them."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.db import holds_sqlite_write_lock
from portal.models import Invoice, InvoiceStatus, PaymentStatus, PortalUser
from portal.services import payments
from tests.conftest import Auth, Backend, QueryCounter, scoped_session
from tests.factories import account_named, make_invoice
from tests.web.payment_helpers import invoice, method, open_form, payment, submit

# The benchmarked submit (bench/over_http.py `pay_all`), on both databases: the session with
# its user, company and grants; the flags; the invoices locked with their accounts and what
# the form's key already made; what other payments hold; the saved methods; the payment, its
# allocation, the invoice's status and the audit record; the sandbox's three; the payment's
# and the invoice's outcome and its audit record; the outbox row of its result mail, written in
# the same transaction (so the mail cannot be lost, nor sent for a payment that rolled back);
# the receipt as a notification: the payer's channels for it, its row (once per payment) and
# the row read back; the receivables feed's event of the outcome (an INSERT into ar_events in
# the same transaction as the outcome).
ONE_INVOICE = 20
# Three invoices of two billing accounts: a group and a payment per account, each charged on
# its own. SQLite writes the new rows one by one (it has no ordered RETURNING for a batch),
# PostgreSQL a statement per kind of row. Each payment's result mail is a row of the outbox,
# and its receipt a notification (three statements each, as above), and its outcome an event of
# the receivables feed (one INSERT each).
SEVERAL_ACCOUNTS = {"sqlite": 36, "postgresql": 32}


def _show(name: str, statements: list[str]) -> None:
    print(f"\n{name}: {len(statements)} statements")
    for number, statement in enumerate(statements, 1):
        flat = re.sub(r"\s+", " ", statement)
        print(f"{number:3} {flat[:160]}")


def _confirm(
    client: FlaskClient, invoices: list[Invoice], visa: str, counter: QueryCounter
) -> tuple[Any, list[str]]:
    """Open the form and confirm it at once, as the benchmark does; the confirm's statements."""
    _page, key, token = open_form(client, *(inv.public_id for inv in invoices))
    counter.statements.clear()
    confirmed = submit(client, invoices, key=key, token=token, action="confirm", method_id=visa)
    statements = list(counter.statements)
    assert confirmed.status_code == 303, confirmed.get_data(as_text=True)
    return confirmed, statements


def test_paying_one_invoice_by_the_saved_visa(
    client: FlaskClient, signed_in: Auth, db: Session, count_queries: QueryCounter
) -> None:
    owed = make_invoice(db, account_named(db, "Acme West"), "1234.56", due=-45)
    confirmed, statements = _confirm(client, [owed], method(db, "4242").public_id, count_queries)
    _show("one invoice", statements)
    assert len(statements) <= ONE_INVOICE, statements
    public_id = confirmed.headers["Location"].rsplit("/", 1)[1]
    assert payment(db, public_id).status is PaymentStatus.SUCCEEDED
    assert invoice(db, owed.number).status is InvoiceStatus.PAID
    # Every row the flow keeps is written once: no statement repeats another.
    writes = [s for s in statements if not s.lstrip().upper().startswith("SELECT")]
    assert len(writes) == len(set(writes)) + 1, writes  # two audit records, one statement each


def test_paying_invoices_of_two_accounts_by_the_saved_visa(
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    backend: Backend,
    count_queries: QueryCounter,
) -> None:
    west, east = account_named(db, "Acme West"), account_named(db, "Acme East")
    owed = [
        make_invoice(db, west, "100.00", due=-30),
        make_invoice(db, west, "50.00", due=-5),
        make_invoice(db, east, "250.00", due=-15),
    ]
    _confirmed, statements = _confirm(client, owed, method(db, "4242").public_id, count_queries)
    _show("three invoices, two accounts", statements)
    assert len(statements) <= SEVERAL_ACCOUNTS[backend.name], statements
    assert all(invoice(db, inv.number).status is InvoiceStatus.PAID for inv in owed)
    # Each invoice's status moves in one UPDATE for them all, then one per payment's outcome.
    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE INVOICES")]
    assert len(updates) == 3, updates


def test_a_second_confirm_of_the_same_form_reads_what_the_first_made(
    client: FlaskClient, signed_in: Auth, db: Session, count_queries: QueryCounter
) -> None:
    owed = make_invoice(db, account_named(db, "Acme West"), "80.00", due=-3)
    visa = method(db, "4242").public_id
    _page, key, token = open_form(client, owed.public_id)
    first = submit(client, [owed], key=key, token=token, action="confirm", method_id=visa)
    count_queries.statements.clear()
    again = submit(client, [owed], key=key, token=token, action="confirm", method_id=visa)
    _show("the same form again", count_queries.statements)
    assert again.status_code == 303 and again.headers["Location"] == first.headers["Location"]
    # session, flags, the locked invoices with what the key made, that payment: nothing written
    assert len(count_queries.statements) <= 4, count_queries.statements
    assert all(s.lstrip().upper().startswith("SELECT") for s in count_queries.statements)


def test_the_lock_is_taken_by_the_statement_that_reads_the_invoices(
    app: Flask, backend: Backend, count_queries: QueryCounter
) -> None:
    """PostgreSQL locks the rows as it reads them; SQLite's one write lock is taken by a write
    first, unless the transaction holds it already (a writing request's does from its start)."""
    session = scoped_session(app, "admin@acme.test")
    user = session.scalars(select(PortalUser).where(PortalUser.email == "admin@acme.test")).one()
    owed = session.scalars(select(Invoice).where(Invoice.number == "INV-1004")).one()
    connection = session.connection()
    assert not holds_sqlite_write_lock(connection)  # nothing written yet in this transaction
    count_queries.statements.clear()
    selection = payments.lock_selection(
        session, user, payments.new_idempotency_key(), [owed.public_id]
    )
    assert isinstance(selection, payments.Selection) and selection.problem is None
    first = count_queries.statements[0]
    if backend.name == "sqlite":
        assert first.startswith("UPDATE invoices") and holds_sqlite_write_lock(connection)
        count_queries.statements.clear()
        payments.lock_selection(session, user, payments.new_idempotency_key(), [owed.public_id])
        assert count_queries.statements[0].startswith("SELECT"), count_queries.statements
    else:
        assert first.startswith("SELECT") and first.rstrip().endswith("FOR UPDATE OF invoices")
    session.close()
