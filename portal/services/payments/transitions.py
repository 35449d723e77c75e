"""Moving a payment (and its invoices) from one status to the next: every move is a conditional
UPDATE from a non-final status, so two writers (a webhook and a job, a replay) never both move
it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Row, case, inspect, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from portal import metrics
from portal.db import utcnow
from portal.gateways import (
    ChargeResult,
    ChargeStatus,
)
from portal.models import (
    Company,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    PaymentStatus,
    PortalUser,
)
from portal.services import ar_events, audit
from portal.services.invoices import PAYABLE
from portal.services.payments.rules import FINAL, IN_FLIGHT
from portal.services.payments.selection import reserved_amounts

# Every column a payment maps, read back by the UPDATE that moves it.
_PAYMENT_COLUMNS = tuple(attr.key for attr in inspect(Payment).column_attrs)


def apply_result(
    session: Session, payment: Payment, result: ChargeResult, *, now: datetime
) -> bool:
    """Move the payment (and its invoices) to what the gateway says. True if anything changed."""
    if result.status is ChargeStatus.SUCCEEDED:
        changed = _transition(session, payment, PaymentStatus.SUCCEEDED, result, now)
        if changed:
            _apply_to_invoices(session, payment, now)
            _record_outcome(session, payment, "Portal.PaymentMade")
            _publish(session, payment, ar_events.PAYMENT_SUCCEEDED)
            metrics.payments.labels(payment.gateway, "succeeded").inc()
        return changed
    if result.status is ChargeStatus.FAILED:
        changed = _transition(session, payment, PaymentStatus.FAILED, result, now)
        if changed:
            _release_invoices(session, payment, InvoiceStatus.PAYMENT_FAILED)
            _record_outcome(session, payment, "Portal.PaymentFailed")
            _publish(session, payment, ar_events.PAYMENT_FAILED)
            metrics.payments.labels(payment.gateway, "failed").inc()
        return changed
    # Still on its way (processing, or waiting for the customer to authenticate).
    values: dict[str, object] = {}
    if result.reference and payment.gateway_reference is None:
        values["gateway_reference"] = result.reference
    if result.status is ChargeStatus.REQUIRES_ACTION and result.action_url != payment.action_url:
        values["action_url"] = result.action_url
    if not values or payment.status in FINAL:
        return False
    moved = _move(session, payment, IN_FLIGHT, **values)
    if moved:  # the gateway's first word on this charge (or a new authentication step)
        metrics.payments.labels(payment.gateway, result.status.value).inc()
    return moved


def _move(
    session: Session, payment: Payment, sources: Sequence[PaymentStatus], **values: object
) -> bool:
    """The one way a payment row changes: a conditional UPDATE from one of `sources`, so two
    writers (a webhook and a job, a replay) can never both move it. True if this one did.
    The row it wrote comes back with it (RETURNING) and becomes what `payment` holds; when
    another writer moved it first, `payment` is read again to show where it stands."""
    row = session.execute(
        update(Payment)
        .where(Payment.id == payment.id, Payment.status.in_(sources))
        .values(**values)
        .returning(*(getattr(Payment, key) for key in _PAYMENT_COLUMNS))
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if row is None:
        session.refresh(payment)
        return False
    _set_loaded(payment, _PAYMENT_COLUMNS, row)
    return True


def _set_loaded(instance: object, keys: Sequence[str], row: Sequence[object]) -> None:
    """What the database holds now, as the loaded (unchanged) state of `instance`."""
    for key, value in zip(keys, row, strict=True):
        set_committed_value(instance, key, value)


def _transition(
    session: Session,
    payment: Payment,
    status: PaymentStatus,
    result: ChargeResult,
    now: datetime,
    **extra: object,
) -> bool:
    values: dict[str, object] = {"status": status, "processed_at": now, "action_url": None}
    if result.reference:
        values["gateway_reference"] = result.reference
    if status is PaymentStatus.FAILED:
        values["failure_code"] = (result.failure_code or "processing_error")[:60]
    values.update(extra)
    return _move(session, payment, IN_FLIGHT, **values)


def _apply_to_invoices(session: Session, payment: Payment, now: datetime) -> None:
    """Add the payment's allocations to its invoices' paid amounts, in one UPDATE, each only
    while it stays within the invoice's total. A disputed invoice stays Disputed (closing the
    dispute gives it the status its amounts make it)."""
    amounts: dict[int, int] = {}
    for allocation in payment.allocations:
        amounts[allocation.invoice_id] = amounts.get(allocation.invoice_id, 0) + allocation.amount
    added = {invoice_id: literal(amount, BigInteger()) for invoice_id, amount in amounts.items()}
    paid = Invoice.amount_paid + case(added, value=Invoice.id)
    rows = session.execute(
        update(Invoice)
        .where(Invoice.id.in_(amounts), paid <= Invoice.total)
        .values(
            amount_paid=paid,
            status=case(
                (Invoice.status == InvoiceStatus.DISPUTED.value, InvoiceStatus.DISPUTED.value),
                (paid == Invoice.total, InvoiceStatus.PAID.value),
                else_=InvoiceStatus.PARTIALLY_PAID.value,
            ),
            paid_at=case((paid == Invoice.total, now), else_=Invoice.paid_at),
            version=Invoice.version + 1,
            updated_at=now,
        )
        .returning(Invoice.id, *(getattr(Invoice, key) for key in _INVOICE_CHANGES))
        .execution_options(synchronize_session=False)
    ).all()
    if len(rows) != len(amounts):  # reservations make this unreachable; the CHECK backs it up
        raise RuntimeError(f"payment {payment.public_id} would overpay an invoice")
    _refresh_invoices(session, rows)


def mark_processing(session: Session, invoices: Sequence[Invoice]) -> None:
    """Invoices a payment is now charging for show "Processing" (one UPDATE for them all).
    The caller holds their lock (`lock_selection`), so they are as it read them."""
    ids = [invoice.id for invoice in invoices if invoice.status is not InvoiceStatus.PROCESSING]
    if not ids:
        return
    rows = session.execute(
        update(Invoice)
        .where(Invoice.id.in_(ids))
        .values(status=InvoiceStatus.PROCESSING, version=Invoice.version + 1, updated_at=utcnow())
        .returning(Invoice.id, *(getattr(Invoice, key) for key in _INVOICE_CHANGES))
        .execution_options(synchronize_session=False)
    ).all()
    _refresh_invoices(session, rows)


def _release_invoices(session: Session, payment: Payment, status: InvoiceStatus) -> None:
    """After a failure: invoices that no other payment is processing take `status`."""
    ids = [a.invoice_id for a in payment.allocations]
    busy = reserved_amounts(session, ids, statuses=(PaymentStatus.PROCESSING,))
    free = [invoice_id for invoice_id in ids if invoice_id not in busy]
    if free:
        rows = session.execute(
            update(Invoice)
            .where(Invoice.id.in_(free), Invoice.status == InvoiceStatus.PROCESSING)
            .values(status=status, version=Invoice.version + 1)
            .returning(Invoice.id, *(getattr(Invoice, key) for key in _INVOICE_CHANGES))
            .execution_options(synchronize_session=False)
        ).all()
        _refresh_invoices(session, rows)


# What a payment's progress changes on an invoice, read back with each UPDATE.
_INVOICE_CHANGES = ("amount_paid", "balance_due", "status", "paid_at", "version", "updated_at")


def _refresh_invoices(session: Session, rows: Sequence[Row[Any]]) -> None:
    """The invoices this session holds take the values their UPDATE returned."""
    for row in rows:
        invoice = session.identity_map.get(session.identity_key(Invoice, row[0]))
        if invoice is not None:
            _set_loaded(invoice, _INVOICE_CHANGES, tuple(row[1:]))


def _record_outcome(session: Session, payment: Payment, name: str) -> None:
    method = payment.payment_method
    company = session.get(Company, payment.company_id)
    properties: dict[str, Any] = {
        "customer_id": company.public_id if company else None,
        "payment_id": payment.public_id,
        "reference": payment.reference,
        "invoice_ids": [a.invoice.public_id for a in payment.allocations],
        "amount": payment.amount,
        "currency": payment.currency,
        "payment_method": method.kind.value if method else None,
    }
    if name == "Portal.PaymentFailed":
        properties["error_reason"] = payment.failure_code
    audit.record(
        session, name, company_id=payment.company_id, user_id=payment.user_id, **properties
    )


def _publish(session: Session, payment: Payment, kind: str) -> None:
    """The receivables feed's event of a payment's outcome (public ids and amounts only)."""
    company = session.get(Company, payment.company_id)
    data: dict[str, Any] = {
        "payment_id": payment.public_id,
        "reference": payment.reference,
        "company_id": company.public_id if company else None,
        "amount": {"amount_minor": payment.amount, "currency": payment.currency},
        "invoices": [
            {
                "id": a.invoice.public_id,
                "number": a.invoice.number,
                "billing_account_id": a.invoice.billing_account.public_id,
                "amount_minor": a.amount,
            }
            for a in payment.allocations
        ],
    }
    if kind == ar_events.PAYMENT_FAILED:
        data["failure_code"] = payment.failure_code
    ar_events.record(session, payment.company_id, kind, payment.public_id, data)


# scheduled payments ------------------------------------------------------------------------


def cancel_scheduled(
    session: Session,
    payment: Payment,
    user: PortalUser,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> bool:
    changed = _move(
        session, payment, (PaymentStatus.SCHEDULED,), status=PaymentStatus.CANCELED,
        processed_at=now,
    )  # fmt: skip
    if changed:
        record_canceled(session, user, payment, request=request)
    return changed


def record_canceled(
    session: Session, user: PortalUser, payment: Payment, *, request: audit.RequestInfo
) -> None:
    """Audit a scheduled payment canceled by `user` (themselves, or by opening a dispute)."""
    audit.record_for(
        session,
        user,
        "Portal.PaymentCanceled",
        request=request,
        payment_id=payment.public_id,
        reference=payment.reference,
        amount=payment.amount,
        currency=payment.currency,
    )


# Why the portal canceled a scheduled payment on its own (the payer's mail says it).
ALREADY_PAID = "invoice_already_paid"
DISPUTED = "invoice_disputed"


def lock_invoices(session: Session, invoice_ids: Sequence[int]) -> dict[int, Invoice]:
    """The invoices, read again under their row lock (SELECT … FOR UPDATE on PostgreSQL, in id
    order; SQLite: the unit already holds the database's write lock), so a dispute being
    opened and a scheduled payment starting never both go ahead."""
    locked = session.scalars(
        select(Invoice)
        .where(Invoice.id.in_(sorted(set(invoice_ids))))
        .order_by(Invoice.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {invoice.id: invoice for invoice in locked}


def cancel_scheduled_for_invoice(
    session: Session, invoice_id: int, *, now: datetime, failure_code: str
) -> list[Payment]:
    """Cancel the scheduled payments (not started yet) that pay the invoice, each once, with
    `failure_code` as the reason; the caller holds the invoice's lock. Returns those this call
    canceled (whose payers are to be told)."""
    scheduled = session.scalars(
        select(Payment)
        .where(
            Payment.status == PaymentStatus.SCHEDULED,
            Payment.id.in_(
                select(PaymentAllocation.payment_id).where(
                    PaymentAllocation.invoice_id == invoice_id
                )
            ),
        )
        .order_by(Payment.id)
    ).all()
    canceled: list[Payment] = []
    for payment in scheduled:
        values = {"status": PaymentStatus.CANCELED, "processed_at": now}
        if _move(session, payment, (PaymentStatus.SCHEDULED,), **values, failure_code=failure_code):
            canceled.append(payment)
    return canceled


def start_scheduled(session: Session, payment: Payment, *, today: date, now: datetime) -> bool:
    """A scheduled payment whose day has come becomes processing (once, whoever asks). It is
    canceled instead when one of its invoices is disputed (the dispute holds it) or was paid
    some other way since; its invoices are read under their lock."""
    if payment.scheduled_for is None or payment.scheduled_for > today:
        return False
    locked = lock_invoices(session, [a.invoice_id for a in payment.allocations])
    invoices = [locked[a.invoice_id] for a in payment.allocations]
    if any(invoice.status is InvoiceStatus.DISPUTED for invoice in invoices):
        _cancel(session, payment, now, DISPUTED)
        return False
    reserved_elsewhere = reserved_amounts(
        session, [a.invoice_id for a in payment.allocations], excluding=payment.id
    )
    for allocation, invoice in zip(payment.allocations, invoices, strict=True):
        if allocation.amount > invoice.balance_due - reserved_elsewhere.get(invoice.id, 0):
            # Paid some other way since it was scheduled: charging would overpay.
            _cancel(session, payment, now, ALREADY_PAID)
            return False
    changed = _move(
        session, payment, (PaymentStatus.SCHEDULED,), status=PaymentStatus.PROCESSING,
        charging_since=now,
    )  # fmt: skip
    if changed:
        for invoice in invoices:
            if invoice.status in PAYABLE:
                invoice.status = InvoiceStatus.PROCESSING
    return changed


def _cancel(session: Session, payment: Payment, now: datetime, failure_code: str) -> None:
    _transition(
        session,
        payment,
        PaymentStatus.CANCELED,
        ChargeResult(ChargeStatus.FAILED, None),
        now,
        failure_code=failure_code,
    )
