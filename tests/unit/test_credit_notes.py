"""Credit notes (services.credit_notes): what applying one changes, what it refuses (writing
nothing), and that no mix of credits and payments overpays an invoice."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from flask import Flask
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, func, select, text
from sqlalchemy.orm import Session

from portal import migrate, tenancy
from portal.db import make_engine, utcnow
from portal.gateways import ChargeResult, ChargeStatus
from portal.models import (
    AuditEvent,
    BillingAccount,
    CreditNote,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentStatus,
)
from portal.services import credit_notes
from portal.services.credit_notes import CreditRefusal
from portal.services.payments import transitions
from tests.conftest import migrate_and_seed
from tests.factories import account_named, make_account, make_company, make_invoice, make_payment
from tests.web.test_payments_references import fresh_url

__all__ = ["fresh_url"]  # a fixture of this module too

_numbers = itertools.count(1)


def credit(db: Session, invoice: Invoice, amount: int, **changes: Any) -> credit_notes.CreditResult:
    arguments: dict[str, Any] = {
        "number": f"CN-T{next(_numbers):05d}",
        "amount": amount,
        "currency": invoice.currency,
        "issue_date": date.today(),
        "now": utcnow(),
        **changes,
    }
    with tenancy.system(db):
        return credit_notes.apply(db, invoice, **arguments)


def written(db: Session, invoice: Invoice) -> tuple[Any, ...]:
    """What a refusal must leave as it was."""
    with tenancy.system(db):
        db.refresh(invoice)
        return (
            invoice.amount_paid,
            invoice.amount_credited,
            invoice.status,
            invoice.version,
            db.scalar(select(func.count()).select_from(CreditNote)),
            db.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.name == "Portal.CreditApplied")
            ),
        )


@pytest.fixture
def west(db: Session) -> BillingAccount:
    return account_named(db, "Acme West")


def test_a_credit_settles_part_of_the_invoice_and_is_recorded(
    db: Session, west: BillingAccount
) -> None:
    invoice = make_invoice(db, west, "100.00")
    result = credit(db, invoice, 3_000, reason="Returned goods")
    assert result.refusal is None and result.credit_note is not None
    assert (invoice.amount_paid, invoice.amount_credited, invoice.balance_due) == (
        3_000,
        3_000,
        7_000,
    )
    assert invoice.paid_by_payments == 0
    with tenancy.system(db):
        assert credit_notes.for_invoice(db, invoice) == [result.credit_note]
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.name == "Portal.CreditApplied")
        ).all()
    mine = [e for e in events if e.properties["credit_note_id"] == result.credit_note.public_id]
    assert [(e.properties["invoice_id"], e.properties["amount"]) for e in mine] == [
        (invoice.public_id, 3_000)
    ]
    # Crediting the rest pays the invoice.
    assert credit(db, invoice, 7_000).credit_note is not None
    assert invoice.status is InvoiceStatus.PAID and invoice.balance_due == 0


@pytest.mark.parametrize("amount", [0, -1, -12_000])
def test_refuses_an_amount_that_is_not_positive(
    db: Session, west: BillingAccount, amount: int
) -> None:
    invoice = make_invoice(db, west, "100.00")
    before = written(db, invoice)
    assert credit(db, invoice, amount).refusal is CreditRefusal.NOT_POSITIVE
    assert written(db, invoice) == before


def test_refuses_another_currency(db: Session, west: BillingAccount) -> None:
    invoice = make_invoice(db, west, "100.00")
    before = written(db, invoice)
    assert credit(db, invoice, 1_000, currency="EUR").refusal is CreditRefusal.CURRENCY
    assert written(db, invoice) == before


def test_refuses_more_than_the_invoice_owes(db: Session, west: BillingAccount) -> None:
    invoice = make_invoice(db, west, "100.00", balance="40.00")
    before = written(db, invoice)
    assert credit(db, invoice, 4_001).refusal is CreditRefusal.TOO_MUCH
    assert written(db, invoice) == before
    assert credit(db, invoice, 4_000).credit_note is not None


def test_refuses_what_a_processing_payment_already_holds(db: Session, west: BillingAccount) -> None:
    invoice = make_invoice(db, west, "100.00")
    make_payment(db, invoice, "60.00", status=PaymentStatus.PROCESSING)
    before = written(db, invoice)
    assert credit(db, invoice, 4_001).refusal is CreditRefusal.TOO_MUCH
    assert written(db, invoice) == before
    assert credit(db, invoice, 4_000).credit_note is not None


def test_refuses_a_number_the_company_already_used(db: Session, west: BillingAccount) -> None:
    invoice = make_invoice(db, west, "100.00")
    before = written(db, invoice)
    assert credit(db, invoice, 1_000, number="CN-301").refusal is CreditRefusal.DUPLICATE
    assert written(db, invoice) == before
    # Another company may use the same number.
    other = make_company(db)
    theirs = make_invoice(db, other.billing_accounts[0], "100.00")
    assert credit(db, theirs, 1_000, number="CN-301").credit_note is not None


def test_refuses_a_void_invoice(db: Session, west: BillingAccount) -> None:
    invoice = make_invoice(db, west, "100.00", status=InvoiceStatus.VOID)
    before = written(db, invoice)
    assert credit(db, invoice, 1_000).refusal is CreditRefusal.VOID
    assert written(db, invoice) == before


def test_refuses_a_date_before_the_invoice_or_after_today(
    db: Session, west: BillingAccount
) -> None:
    invoice = make_invoice(db, west, "100.00")
    before = written(db, invoice)
    early = invoice.issue_date - timedelta(days=1)
    assert credit(db, invoice, 1_000, issue_date=early).refusal is CreditRefusal.DATE
    tomorrow = utcnow().date() + timedelta(days=1)
    assert credit(db, invoice, 1_000, issue_date=tomorrow).refusal is CreditRefusal.DATE
    assert written(db, invoice) == before
    assert credit(db, invoice, 1_000, issue_date=invoice.issue_date).credit_note is not None


# credits and payments, in any order -----------------------------------------------------------

TOTAL = 10_000
amount = st.one_of(
    st.integers(1, TOTAL // 2), st.integers(1, TOTAL // 2), st.integers(TOTAL // 2, TOTAL + 1)
)
step = st.one_of(
    st.tuples(st.just("credit"), st.one_of(amount, amount, amount, st.integers(-100, 0))),
    st.tuples(st.just("pay"), amount),
    st.tuples(st.just("settle"), st.integers(0, 9), st.booleans()),
)


def _run(db: Session, invoice: Invoice, op: tuple[Any, ...], payments: list[Payment]) -> int:
    """One step; returns what a credit note settled (0 when refused or not a credit)."""
    if op[0] == "credit":
        result = credit(db, invoice, op[1])
        event(f"credit: {result.refusal or 'applied'}")
        return result.credit_note.amount if result.credit_note else 0
    if op[0] == "pay":
        # The payment form offers only what is still available: the balance less what
        # payments on their way hold.
        with tenancy.system(db):
            held = db.scalar(
                select(func.coalesce(func.sum(Payment.amount), 0)).where(
                    Payment.status == PaymentStatus.PROCESSING,
                    Payment.id.in_([p.id for p in payments]),
                )
            )
            db.refresh(invoice)
        if op[1] <= invoice.balance_due - int(held or 0):
            payments.append(make_payment(db, invoice, op[1], status=PaymentStatus.PROCESSING))
        return 0
    waiting = [p for p in payments if p.status is PaymentStatus.PROCESSING]
    if waiting:
        payment = waiting[op[1] % len(waiting)]
        outcome = ChargeStatus.SUCCEEDED if op[2] else ChargeStatus.FAILED
        event(f"settle: {outcome.value}, {'with' if invoice.amount_credited else 'no'} credit")
        with tenancy.system(db):
            transitions.apply_result(
                db,
                payment,
                ChargeResult(outcome, f"ch_{payment.public_id}", failure_code="card_declined"),
                now=utcnow(),
            )
    return 0


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, max_size=20))
def test_credits_and_payments_never_overpay_an_invoice(
    app: Flask, connection: Connection, steps: list[tuple[Any, ...]]
) -> None:
    # Each example in a session of its own, on a savepoint of the test's transaction.
    db: Session = app.extensions["portal.db"].sessionmaker()
    try:
        company = make_company(db)
        account = make_account(db, company)
        invoice = make_invoice(db, account, TOTAL)
        payments: list[Payment] = []
        credited = 0
        for op in steps:
            credited += _run(db, invoice, op, payments)
            with tenancy.system(db):
                db.refresh(invoice)
            settled = sum(p.amount for p in payments if p.status is PaymentStatus.SUCCEEDED)
            assert invoice.balance_due >= 0, op
            assert 0 <= invoice.amount_credited <= invoice.amount_paid <= invoice.total, op
            assert invoice.amount_credited == credited, op
            assert invoice.paid_by_payments == settled, op
            assert invoice.balance_due == invoice.total - invoice.amount_paid, op
    finally:
        db.rollback()
        db.close()


# the migration going back ---------------------------------------------------------------------


def test_going_back_before_credit_notes_owes_what_they_settled(
    fresh_url: str, tmp_path: Path
) -> None:
    """Before migration 0012 only payments settled an invoice: a downgrade hands back what
    credit notes settled (INV-1003's CN-301), and upgrading again starts from there."""
    migrate_and_seed(fresh_url, tmp_path / "files", date.today())
    engine = make_engine(fresh_url)

    def invoice_1003() -> tuple[Any, ...]:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":  # row-level security: a system read
                connection.execute(text("SELECT set_config('app.system', 'on', true)"))
            return tuple(
                connection.execute(
                    text(
                        "SELECT amount_paid, total, status, (SELECT coalesce(sum(a.amount), 0)"
                        " FROM payment_allocations a JOIN payments p ON p.id = a.payment_id"
                        " WHERE a.invoice_id = i.id AND p.status = 'succeeded')"
                        " FROM invoices i WHERE number = 'INV-1003'"
                    )
                ).one()
            )

    paid, total, _status, by_payments = invoice_1003()
    assert paid > by_payments  # CN-301 settled part of it
    config = migrate.alembic_config(fresh_url)
    command.downgrade(config, "0011")
    paid, total, status, by_payments = invoice_1003()
    assert paid == by_payments and status != "paid" and paid < total
    command.upgrade(config, "head")
    assert invoice_1003()[0] == by_payments
    engine.dispose()
