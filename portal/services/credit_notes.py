"""Credit notes: credit given against one invoice, which lowers what it still owes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from portal.models import CreditNote, Document, Invoice, InvoiceStatus
from portal.services import audit
from portal.services.payments.selection import reserved_amounts


class CreditRefusal(StrEnum):
    NOT_POSITIVE = "not_positive"
    CURRENCY = "currency"  # not the invoice's currency
    TOO_MUCH = "too_much"  # more than the invoice owes, less what payments on their way hold
    VOID = "void"
    DUPLICATE = "duplicate"  # the company already has a credit note with this number
    DATE = "date"  # issued before the invoice, or after today


@dataclass(frozen=True)
class CreditResult:
    credit_note: CreditNote | None = None
    refusal: CreditRefusal | None = None


def apply(
    session: Session,
    invoice: Invoice,
    *,
    number: str,
    amount: int,
    currency: str,
    issue_date: date,
    now: datetime,
    reason: str = "",
    document: Document | None = None,
) -> CreditResult:
    """Credit `amount` (minor units) against `invoice`: a credit note row, and the invoice's
    settled amount raised in one guarded UPDATE (a fully credited invoice is paid). Refused,
    with nothing written, when it would settle more than the invoice owes beyond what payments
    on their way already hold."""
    if amount <= 0:
        return CreditResult(refusal=CreditRefusal.NOT_POSITIVE)
    if currency != invoice.currency:
        return CreditResult(refusal=CreditRefusal.CURRENCY)
    if invoice.status is InvoiceStatus.VOID:
        return CreditResult(refusal=CreditRefusal.VOID)
    if not invoice.issue_date <= issue_date <= now.date():
        return CreditResult(refusal=CreditRefusal.DATE)
    taken = session.scalar(
        select(CreditNote.id).where(
            CreditNote.company_id == invoice.company_id, CreditNote.number == number
        )
    )
    if taken is not None:
        return CreditResult(refusal=CreditRefusal.DUPLICATE)
    # What payments on their way hold is read under the invoice's row lock, the lock a payer
    # takes before reserving (portal/services/payments/selection.py), so none slips in between.
    # SQLite: this unit already holds the database's write lock (BEGIN IMMEDIATE).
    session.execute(select(Invoice.id).where(Invoice.id == invoice.id).with_for_update())
    held = reserved_amounts(session, [invoice.id]).get(invoice.id, 0)
    settled = Invoice.amount_paid + amount
    changed = session.scalar(
        update(Invoice)
        .where(Invoice.id == invoice.id, settled + held <= Invoice.total)
        .values(
            amount_paid=settled,
            amount_credited=Invoice.amount_credited + amount,
            status=_status_after(settled),
            paid_at=_paid_at_after(settled, now),
            version=Invoice.version + 1,
            updated_at=now,
        )
        .returning(Invoice.id)
        .execution_options(synchronize_session=False)
    )
    if changed is None:
        return CreditResult(refusal=CreditRefusal.TOO_MUCH)
    session.refresh(invoice)
    note = CreditNote(
        company_id=invoice.company_id,
        billing_account_id=invoice.billing_account_id,
        invoice_id=invoice.id,
        document_id=document.id if document else None,
        number=number,
        issue_date=issue_date,
        currency=currency,
        amount=amount,
        reason=reason,
        created_at=now,
    )
    session.add(note)
    session.flush()
    audit.record(
        session,
        "Portal.CreditApplied",
        company_id=invoice.company_id,
        credit_note_id=note.public_id,
        invoice_id=invoice.public_id,
        amount=amount,
        currency=currency,
    )
    return CreditResult(credit_note=note)


def _status_after(settled: Any) -> Any:
    return case(
        (settled == Invoice.total, InvoiceStatus.PAID.value),
        else_=Invoice.status,
    )


def _paid_at_after(settled: Any, now: datetime) -> Any:
    return case((settled == Invoice.total, now), else_=Invoice.paid_at)


def for_invoice(session: Session, invoice: Invoice) -> list[CreditNote]:
    return list(
        session.scalars(
            select(CreditNote)
            .where(CreditNote.invoice_id == invoice.id)
            .order_by(CreditNote.issue_date, CreditNote.id)
        )
    )
