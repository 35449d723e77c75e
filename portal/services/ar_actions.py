"""What the receivables system does to a company's invoices through `/api/ar/` (voids and
credits), each with its event in the feed, in the caller's transaction (flushed, never
committed here). The caller binds the company's scope first (`tenancy.bind`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import Company, CreditNote, Invoice, InvoiceStatus
from portal.services import ar_events, audit, credit_notes
from portal.services.credit_notes import CreditRefusal
from portal.services.disputes import next_credit_number
from portal.services.payments.selection import reserved_amounts

# What an invoice may be voided from: nothing paid or credited, no dispute holding it.
VOIDABLE = (InvoiceStatus.OPEN, InvoiceStatus.PAYMENT_FAILED)


class VoidRefusal(StrEnum):
    SETTLED = "settled"  # something was paid or credited: credit it instead
    IN_FLIGHT = "payment_in_flight"  # a payment is on its way or scheduled
    STATUS = "status"  # disputed, processing or paid


def find_company(session: Session, public_id: str) -> Company | None:
    """The company behind a public id (the caller's scope is bound to it afterwards)."""
    with tenancy.system(session):
        return session.scalars(select(Company).where(Company.public_id == public_id)).one_or_none()


def find_invoice(session: Session, reference: str) -> Invoice | None:
    """The bound company's invoice by public id ("inv_…") or by number ("INV-1001"); should
    one invoice's id be another's number, the id is meant (never whichever row came first)."""
    found = session.scalars(
        select(Invoice).where(or_(Invoice.public_id == reference, Invoice.number == reference))
    ).all()
    by_id = [invoice for invoice in found if invoice.public_id == reference]
    return next(iter(by_id or found), None)


def _invoice_data(session: Session, invoice: Invoice) -> dict[str, object]:
    company = session.get(Company, invoice.company_id)
    return {
        "invoice_id": invoice.public_id,
        "invoice_number": invoice.number,
        "company_id": company.public_id if company else None,
        "billing_account_id": invoice.billing_account.public_id,
        "total": {"amount_minor": invoice.total, "currency": invoice.currency},
        "balance_due": {"amount_minor": invoice.balance_due, "currency": invoice.currency},
        "status": invoice.status.value,
    }


def void(session: Session, invoice: Invoice, *, now: datetime) -> VoidRefusal | None:
    """Void an invoice nobody has paid or credited any of; None when done (or already void).
    Read again under the invoice's row lock (the lock a payer takes before reserving), so no
    payment slips in between; a guarded UPDATE backs it up."""
    if invoice.status is InvoiceStatus.VOID:
        return None
    session.execute(select(Invoice.id).where(Invoice.id == invoice.id).with_for_update())
    session.refresh(invoice)
    if invoice.amount_paid or invoice.amount_credited:
        return VoidRefusal.SETTLED
    if reserved_amounts(session, [invoice.id]).get(invoice.id, 0):
        return VoidRefusal.IN_FLIGHT
    changed = session.scalar(
        update(Invoice)
        .where(
            Invoice.id == invoice.id,
            Invoice.status.in_(VOIDABLE),
            Invoice.amount_paid == 0,
            Invoice.amount_credited == 0,
        )
        .values(status=InvoiceStatus.VOID, version=Invoice.version + 1, updated_at=now)
        .returning(Invoice.id)
        .execution_options(synchronize_session=False)
    )
    if changed is None:
        session.refresh(invoice)
        return _after_refresh(invoice)
    session.refresh(invoice)
    audit.record(
        session, "Portal.InvoiceVoided", company_id=invoice.company_id, invoice_id=invoice.public_id
    )
    ar_events.record(
        session,
        invoice.company_id,
        ar_events.INVOICE_VOIDED,
        invoice.public_id,
        _invoice_data(session, invoice),
    )
    return None


def _after_refresh(invoice: Invoice) -> VoidRefusal | None:
    """Another writer moved it first: void already (nothing to do), or not voidable."""
    return None if invoice.status is InvoiceStatus.VOID else VoidRefusal.STATUS


@dataclass(frozen=True)
class Credited:
    credit_note: CreditNote | None = None
    refusal: CreditRefusal | None = None


def credit(
    session: Session, invoice: Invoice, *, amount: int, reason: str, now: datetime
) -> Credited:
    """A credit note of `amount` (minor units, the invoice's currency) against the invoice,
    numbered as the company's next (CN-…)."""
    result = credit_notes.apply(
        session,
        invoice,
        number=next_credit_number(session, invoice.company_id),
        amount=amount,
        currency=invoice.currency,
        issue_date=now.date(),
        now=now,
        reason=reason.strip()[:300],
    )
    note = result.credit_note
    if note is None:
        return Credited(refusal=result.refusal)
    data = _invoice_data(session, invoice)
    data["credit_note"] = {
        "id": note.public_id,
        "number": note.number,
        "amount": {"amount_minor": note.amount, "currency": note.currency},
    }
    ar_events.record(
        session, invoice.company_id, ar_events.INVOICE_CREDITED, invoice.public_id, data
    )
    return Credited(credit_note=note)
