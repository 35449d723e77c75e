"""The migrations build exactly the models' schema, and the database guards money and history."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from portal import migrate, tenancy
from portal.db import Base
from portal.models import AuditEvent, Invoice, Payment, PaymentAllocation, PaymentStatus


def test_migrations_match_the_models(connection: Connection) -> None:
    context = MigrationContext.configure(connection, opts={"include_name": migrate.include_name})
    diff = compare_metadata(context, Base.metadata)
    assert diff == []


def _one_payment(db: Session) -> Payment:
    payment = db.scalars(select(Payment).where(Payment.status == PaymentStatus.SUCCEEDED)).first()
    assert payment is not None
    return payment


def test_payment_status_may_change_but_not_its_amount(db: Session) -> None:
    with tenancy.system(db):
        payment = _one_payment(db)
        db.execute(update(Payment).where(Payment.id == payment.id).values(failure_message="x"))
        with pytest.raises(DBAPIError, match="never change"), db.begin_nested():
            db.execute(update(Payment).where(Payment.id == payment.id).values(amount=1))


@pytest.mark.parametrize("model", [Payment, PaymentAllocation, AuditEvent])
def test_history_cannot_be_deleted(db: Session, model: type) -> None:
    with tenancy.system(db):
        if model is AuditEvent:
            db.add(AuditEvent(company_id=None, name="Test.Event"))
            db.flush()
        with pytest.raises(DBAPIError, match="append-only"), db.begin_nested():
            db.execute(delete(model))


@pytest.mark.parametrize("model", [PaymentAllocation, AuditEvent])
def test_history_cannot_be_rewritten(db: Session, model: type) -> None:
    with tenancy.system(db):
        if model is AuditEvent:
            db.add(AuditEvent(company_id=None, name="Test.Event"))
            db.flush()
        values = {"amount": 1} if model is PaymentAllocation else {"name": "Rewritten"}
        with pytest.raises(DBAPIError, match="append-only"), db.begin_nested():
            db.execute(update(model).values(**values))


def test_balance_can_never_go_below_zero(db: Session) -> None:
    with tenancy.system(db):
        invoice = db.scalars(select(Invoice).where(Invoice.number == "INV-1003")).one()
        with pytest.raises(IntegrityError), db.begin_nested():
            db.execute(
                update(Invoice)
                .where(Invoice.id == invoice.id)
                .values(amount_paid=invoice.total + 1)
            )


def test_balance_and_version_follow_the_invoice(db: Session) -> None:
    with tenancy.system(db):
        invoice = db.scalars(select(Invoice).where(Invoice.number == "INV-1004")).one()
        version, total = invoice.version, invoice.total
        invoice.amount_paid = 100
        db.flush()
        db.refresh(invoice)
        assert invoice.balance_due == total - 100
        assert invoice.version == version + 1
