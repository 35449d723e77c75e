"""Disputing an invoice: a structured reason, the amount in question and a message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from portal.models import (
    Dispute,
    DisputeMessage,
    DisputeReason,
    DisputeStatus,
    Invoice,
    InvoiceStatus,
    PortalUser,
)
from portal.services import audit

# A dispute holds the invoice: it can be opened while the customer still owes money on it.
DISPUTABLE = (InvoiceStatus.OPEN, InvoiceStatus.PARTIALLY_PAID, InvoiceStatus.PAYMENT_FAILED)


class DisputeRefusal(StrEnum):
    NOT_DISPUTABLE = "not_disputable"
    AMOUNT_TOO_HIGH = "amount_too_high"


@dataclass(frozen=True)
class DisputeResult:
    dispute: Dispute | None = None
    refusal: DisputeRefusal | None = None


def can_dispute(invoice: Invoice) -> bool:
    return invoice.status in DISPUTABLE and invoice.balance_due > 0


def open_dispute(
    session: Session,
    invoice: Invoice,
    user: PortalUser,
    *,
    reason: DisputeReason,
    amount: int | None,
    message: str,
    now: datetime,
    request: audit.RequestInfo,
) -> DisputeResult:
    if not can_dispute(invoice):
        return DisputeResult(refusal=DisputeRefusal.NOT_DISPUTABLE)
    disputed = invoice.balance_due if amount is None else amount
    if disputed > invoice.balance_due:
        return DisputeResult(refusal=DisputeRefusal.AMOUNT_TOO_HIGH)
    dispute = Dispute(
        company_id=invoice.company_id,
        billing_account_id=invoice.billing_account_id,
        invoice_id=invoice.id,
        opened_by_user_id=user.id,
        reason=reason,
        status=DisputeStatus.OPEN,
        amount_disputed=disputed,
        created_at=now,
        messages=[
            DisputeMessage(
                company_id=invoice.company_id,
                billing_account_id=invoice.billing_account_id,
                author_user_id=user.id,
                author_kind="customer",
                body=message.strip(),
                created_at=now,
            )
        ],
    )
    session.add(dispute)
    invoice.status = InvoiceStatus.DISPUTED
    session.flush()
    audit.record_for(
        session,
        user,
        "Portal.DisputeOpened",
        request=request,
        invoice_id=invoice.public_id,
        dispute_id=dispute.public_id,
        reason=reason.value,
        amount=disputed,
    )
    return DisputeResult(dispute=dispute)


def disputes_for(session: Session, invoice: Invoice) -> list[Dispute]:
    return list(
        session.scalars(
            select(Dispute)
            .where(Dispute.invoice_id == invoice.id)
            .options(selectinload(Dispute.messages))
            .order_by(Dispute.created_at.desc())
        )
    )
