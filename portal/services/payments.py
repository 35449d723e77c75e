"""Paying invoices: choosing what to pay, reserving it, charging once, applying the outcome.

A payment covers the invoices of one billing account. Invoices of several accounts are paid in
one go as a PaymentGroup: one form, one key, and one payment per account underneath.

Money moves exactly once because
- the idempotency key comes from the rendered form, so a double submit finds its own payment
  (or group: each of its payments carries a key derived from the group's);
- creating a payment locks the invoices (FOR UPDATE on PostgreSQL, the write lock on SQLite)
  and refuses more than each balance minus what other unfinished payments already hold;
- every status change is a conditional UPDATE from a non-final status, so a replayed or late
  webhook finds nothing to change; an invoice's paid amount only grows while it stays <= total.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from portal.gateways import (
    ChargeEvent,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    GatewayConflict,
    GatewayError,
    PaymentGateway,
)
from portal.models import (
    BillingAccount,
    Company,
    GatewayEvent,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    PaymentGroup,
    PaymentMethod,
    PaymentStatus,
    PortalUser,
)
from portal.models.payment import new_reference
from portal.services import audit, money
from portal.services.invoices import PAYABLE

# Payments that still hold part of an invoice's balance.
IN_FLIGHT = (PaymentStatus.PENDING, PaymentStatus.SCHEDULED, PaymentStatus.PROCESSING)
FINAL = (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELED)
MAX_INVOICES = 50
# How long a payment may wait for the customer's 3-D Secure before it is given up.
ACTION_TIMEOUT = timedelta(minutes=30)
# Gateways remember an idempotency key for 24 hours; asking again later could charge twice.
KEY_LIFETIME = timedelta(hours=23)
# For this long after KEY_LIFETIME a payment without a reference is reported, then left alone.
REVIEW_WINDOW = timedelta(minutes=10)
MAX_SCHEDULE_DAYS = 365
# Draws of fresh references before giving up (a clash is a one in billions event).
REFERENCE_ATTEMPTS = 3
_KEY = re.compile(r"^[A-Za-z0-9_-]{22,40}$")  # new_idempotency_key() makes 32


class Problem(enum.StrEnum):
    NOTHING_SELECTED = "nothing_selected"
    TOO_MANY = "too_many"
    NOT_FOUND = "not_found"
    ALREADY_PAID = "already_paid"  # 409
    IN_FLIGHT = "in_flight"  # 409
    NOT_PAYABLE = "not_payable"
    MIXED_CURRENCIES = "mixed_currencies"


class FieldError(enum.StrEnum):
    AMOUNT_INVALID = "amount_invalid"
    AMOUNT_DECIMALS = "amount_decimals"
    AMOUNT_NOT_POSITIVE = "amount_not_positive"
    AMOUNT_TOO_LARGE = "amount_too_large"  # above money.MAX_MINOR
    AMOUNT_ABOVE_BALANCE = "amount_above_balance"
    PARTIAL_NOT_ALLOWED = "partial_not_allowed"
    TOTAL_ABOVE_BALANCE = "total_above_balance"
    NOTHING_TO_PAY = "nothing_to_pay"
    METHOD_REQUIRED = "method_required"
    METHOD_EXPIRED = "method_expired"
    DATE_INVALID = "date_invalid"
    DATE_IN_PAST = "date_in_past"
    DATE_TOO_FAR = "date_too_far"
    METHOD_CANNOT_SCHEDULE = "method_cannot_schedule"


@dataclass
class Item:
    invoice: Invoice
    available: int  # the balance minus what unfinished payments already hold
    amount: int = 0  # what this payment applies to it


@dataclass
class Share:
    """What one billing account's payment covers (of a selection that may span several)."""

    account: BillingAccount
    items: list[Item]

    @property
    def total(self) -> int:
        return sum(item.amount for item in self.items)


@dataclass
class Selection:
    items: list[Item] = field(default_factory=list)  # oldest due first, whatever the account
    problem: Problem | None = None
    # The invoice behind the problem, and the payment that holds or paid it (for a link).
    invoice: Invoice | None = None
    blocking_payment: Payment | None = None
    # For a selection in several currencies: the invoices of each, each payable alone.
    groups: list[tuple[str, list[Invoice]]] = field(default_factory=list)

    @property
    def currency(self) -> str:
        return self.items[0].invoice.currency

    @property
    def total(self) -> int:
        return sum(item.amount for item in self.items)

    @property
    def available(self) -> int:
        return sum(item.available for item in self.items)

    def shares(self, *, paying_only: bool = False) -> list[Share]:
        """The items per billing account (accounts by name), oldest first within each; with
        `paying_only`, only what this submit pays: one payment per share."""
        shares: dict[int, Share] = {}
        for item in self.items:
            if paying_only and item.amount <= 0:
                continue
            account = item.invoice.billing_account
            shares.setdefault(account.id, Share(account, [])).items.append(item)
        return sorted(shares.values(), key=lambda share: (share.account.name, share.account.id))

    @property
    def several_accounts(self) -> bool:
        return len({item.invoice.billing_account_id for item in self.items}) > 1


def new_idempotency_key() -> str:
    return secrets.token_urlsafe(24)


def valid_key(key: str | None) -> bool:
    return bool(key and _KEY.match(key))


def _owned_key(user: PortalUser, key: str) -> str:
    """Keys are stored per user, so one user's key can never name another's payment."""
    return f"{user.public_id}:{key}"


def _order(invoice: Invoice) -> tuple[date, date, str]:
    return (invoice.due_date, invoice.issue_date, invoice.number)


def reserved_amounts(
    session: Session,
    invoice_ids: Sequence[int],
    *,
    statuses: Sequence[PaymentStatus] = IN_FLIGHT,
    excluding: int | None = None,
) -> dict[int, int]:
    """Per invoice, what payments in `statuses` (other than `excluding`) hold of it."""
    query = (
        select(PaymentAllocation.invoice_id, func.sum(PaymentAllocation.amount))
        .join(Payment, Payment.id == PaymentAllocation.payment_id)
        .where(PaymentAllocation.invoice_id.in_(invoice_ids), Payment.status.in_(statuses))
        .group_by(PaymentAllocation.invoice_id)
    )
    if excluding is not None:
        query = query.where(Payment.id != excluding)
    return {invoice_id: int(total) for invoice_id, total in session.execute(query)}


def _latest_payment(
    session: Session, invoice: Invoice, statuses: Sequence[PaymentStatus]
) -> Payment | None:
    return session.scalar(
        select(Payment)
        .join(PaymentAllocation, PaymentAllocation.payment_id == Payment.id)
        .where(PaymentAllocation.invoice_id == invoice.id, Payment.status.in_(statuses))
        .order_by(Payment.created_at.desc(), Payment.id.desc())
        .limit(1)
    )


def select_invoices(
    session: Session, public_ids: Sequence[str], *, lock: bool = False
) -> Selection:
    """The invoices to pay, oldest first, each with what is still available to pay on it."""
    ids = list(dict.fromkeys(pid for pid in public_ids if pid))
    if not ids:
        return Selection(problem=Problem.NOTHING_SELECTED)
    if len(ids) > MAX_INVOICES:
        return Selection(problem=Problem.TOO_MANY)
    query = select(Invoice).where(Invoice.public_id.in_(ids)).order_by(Invoice.id)
    if lock:
        # Re-read what an earlier, unlocked read of this request left in the identity map: the
        # locked row is the truth (a payment may have completed while we waited for it).
        query = _locked(session, query, ids).execution_options(populate_existing=True)
    invoices = list(session.scalars(query.options(selectinload(Invoice.billing_account))))
    if len(invoices) != len(ids):
        return Selection(problem=Problem.NOT_FOUND)
    invoices.sort(key=_order)
    # Several accounts are paid together (a payment each); several currencies are not: one
    # total, one "Pay" amount and one spread oldest first need one currency.
    currencies = _groups(invoices, lambda inv: inv.currency)
    if len(currencies) > 1:
        return Selection(problem=Problem.MIXED_CURRENCIES, groups=currencies)
    reserved = reserved_amounts(session, [inv.id for inv in invoices])
    items = []
    for invoice in invoices:
        if invoice.balance_due <= 0 or invoice.status is InvoiceStatus.PAID:
            paid = _latest_payment(session, invoice, (PaymentStatus.SUCCEEDED,))
            return Selection(problem=Problem.ALREADY_PAID, invoice=invoice, blocking_payment=paid)
        available = invoice.balance_due - reserved.get(invoice.id, 0)
        if available <= 0:
            holding = _latest_payment(session, invoice, IN_FLIGHT)
            return Selection(problem=Problem.IN_FLIGHT, invoice=invoice, blocking_payment=holding)
        if invoice.status not in (*PAYABLE, InvoiceStatus.PROCESSING):
            return Selection(problem=Problem.NOT_PAYABLE, invoice=invoice)
        items.append(Item(invoice=invoice, available=available, amount=available))
    return Selection(items=items)


def _locked(session: Session, query: Select[Any], public_ids: list[str]) -> Select[Any]:
    """Serialize payers of the same invoices until this transaction ends."""
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite has no row locks; a write takes the database's write lock for the transaction.
        session.execute(
            update(Invoice)
            .where(Invoice.public_id.in_(public_ids))
            .values(amount_paid=Invoice.amount_paid)
            .execution_options(synchronize_session=False)
        )
        return query
    return query.with_for_update(of=Invoice)


def _groups(invoices: list[Invoice], key: object) -> list[tuple[str, list[Invoice]]]:
    grouped: dict[str, list[Invoice]] = {}
    for invoice in invoices:
        grouped.setdefault(key(invoice), []).append(invoice)  # type: ignore[operator]
    return sorted(grouped.items())


# amounts ---------------------------------------------------------------------------------


def parse_amount(raw: str, currency: str, locale: str = "en") -> int | FieldError:
    """The typed amount in minor units (`money.parse_amount`, the one rule for every amount),
    or what is wrong with it in this form's terms."""
    parsed = money.parse_amount(raw, currency, locale)
    return FieldError(parsed.value) if isinstance(parsed, money.AmountError) else parsed


def allocate_oldest_first(items: list[Item], total: int) -> FieldError | None:
    """Spread `total` over the items, oldest due first, each up to what is available on it."""
    if total > sum(item.available for item in items):
        return FieldError.TOTAL_ABOVE_BALANCE
    remaining = total
    for item in items:  # items are already oldest first
        item.amount = min(item.available, remaining)
        remaining -= item.amount
    return None


def check_amounts(selection: Selection, company: Company) -> dict[str, FieldError]:
    """Per-invoice problems, keyed by the invoice's public id ("" for the payment as a whole)."""
    errors: dict[str, FieldError] = {}
    for item in selection.items:
        if item.amount > item.available:
            errors[item.invoice.public_id] = FieldError.AMOUNT_ABOVE_BALANCE
        elif item.amount < 0:
            errors[item.invoice.public_id] = FieldError.AMOUNT_NOT_POSITIVE
        elif 0 < item.amount < item.available and not company.allow_partial_payments:
            errors[item.invoice.public_id] = FieldError.PARTIAL_NOT_ALLOWED
    if not errors and selection.total <= 0:
        errors[""] = FieldError.NOTHING_TO_PAY
    return errors


def check_method(method: PaymentMethod | None, today: date) -> FieldError | None:
    if method is None or method.removed_at is not None:
        return FieldError.METHOD_REQUIRED
    if method.is_expired(today):
        return FieldError.METHOD_EXPIRED
    return None


def check_schedule(raw: str, today: date) -> date | FieldError | None:
    """None: pay now. A date after today: schedule. Today counts as now."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        when = date.fromisoformat(raw)
    except ValueError:
        return FieldError.DATE_INVALID
    if when < today:
        return FieldError.DATE_IN_PAST
    if when > today + timedelta(days=MAX_SCHEDULE_DAYS):
        return FieldError.DATE_TOO_FAR
    return None if when == today else when


# creating and charging ------------------------------------------------------------------


@dataclass
class Submission:
    payments: list[Payment] = field(default_factory=list)  # one per billing account
    group: PaymentGroup | None = None  # when there are several
    selection: Selection | None = None  # set when the selection itself was refused
    errors: dict[str, FieldError] = field(default_factory=dict)
    replayed: bool = False  # the key had already made these payments

    @property
    def made(self) -> Payment | PaymentGroup | None:
        """What the customer is shown next: the group, else the one payment."""
        return self.group or (self.payments[0] if self.payments else None)


def find_by_key(session: Session, user: PortalUser, key: str) -> Payment | PaymentGroup | None:
    """What this user's form key already made: one payment, or a group of several."""
    owned = _owned_key(user, key)
    group = session.scalar(select(PaymentGroup).where(PaymentGroup.idempotency_key == owned))
    if group is not None:
        return group
    return session.scalar(select(Payment).where(Payment.idempotency_key == owned))


def _replay(session: Session, made: Payment | PaymentGroup) -> Submission:
    if isinstance(made, Payment):
        return Submission(payments=[made], replayed=True)
    return Submission(payments=group_payments(session, made), group=made, replayed=True)


def create_payments(
    session: Session,
    *,
    user: PortalUser,
    company: Company,
    key: str,
    amounts: dict[str, int],
    method: PaymentMethod,
    scheduled_for: date | None,
    gateway_name: str,
    now: datetime,
    request: audit.RequestInfo,
) -> Submission:
    """Reserve the amounts and record one payment per billing account (not yet charged), in a
    group when there are several. All or nothing, in the caller's transaction; it commits."""
    existing = find_by_key(session, user, key)
    if existing is not None:
        return _replay(session, existing)
    selection = select_invoices(session, list(amounts), lock=True)
    if selection.problem is not None:
        # The lock may have waited for payments that were just made with this very key.
        existing = find_by_key(session, user, key)
        if existing is not None:
            return _replay(session, existing)
        return Submission(selection=selection)
    for item in selection.items:
        item.amount = amounts[item.invoice.public_id]
    errors = check_amounts(selection, company)
    if errors:
        return Submission(selection=selection, errors=errors)
    shares = selection.shares(paying_only=True)
    owned = _owned_key(user, key)
    group = None
    if len(shares) > 1:
        group = PaymentGroup(
            company_id=company.id, idempotency_key=owned, user_id=user.id, created_at=now
        )
    made = [
        Payment(
            company_id=company.id,
            billing_account_id=share.account.id,
            # A group's payments: the group's key and the share's place, the same on a retry.
            idempotency_key=f"{owned}.{number}" if group else owned,
            group=group,
            user_id=user.id,
            payment_method_id=method.id,
            currency=selection.currency,
            amount=share.total,
            status=PaymentStatus.SCHEDULED if scheduled_for else PaymentStatus.PROCESSING,
            scheduled_for=scheduled_for,
            charging_since=None if scheduled_for else now,
            gateway=gateway_name,
            created_at=now,
            allocations=[
                PaymentAllocation(
                    company_id=company.id,
                    billing_account_id=share.account.id,
                    invoice_id=item.invoice.id,
                    amount=item.amount,
                )
                for item in share.items
            ],
        )
        for number, share in enumerate(shares, start=1)
    ]
    for attempt in range(REFERENCE_ATTEMPTS):
        try:
            with session.begin_nested():
                session.add_all([group, *made] if group else made)
            break
        except IntegrityError:
            existing = find_by_key(session, user, key)
            if existing is not None:  # a twin of this submit got there first
                return _replay(session, existing)
            if attempt == REFERENCE_ATTEMPTS - 1:
                raise
            for payment in made:  # nothing else is unique: a reference was taken, draw again
                payment.reference = new_reference()
    if scheduled_for is None:
        for item in selection.items:
            if item.amount > 0:
                item.invoice.status = InvoiceStatus.PROCESSING
    for payment in made:
        audit.record_for(
            session,
            user,
            "Portal.PaymentScheduled" if scheduled_for else "Portal.PaymentSubmitted",
            request=request,
            payment_id=payment.public_id,
            reference=payment.reference,
            group_id=group.public_id if group else None,
            invoice_ids=[a.invoice.public_id for a in payment.allocations],
            amount=payment.amount,
            currency=payment.currency,
            payment_method=method.kind.value,
            scheduled_for=scheduled_for.isoformat() if scheduled_for else None,
        )
    return Submission(payments=made, group=group, selection=selection)


def group_payments(session: Session, group: PaymentGroup) -> list[Payment]:
    """The group's payments that the scope may see (a restricted user: their accounts only)."""
    return list(session.scalars(_with_details(Payment.group_id == group.id).order_by(Payment.id)))


def get_group(session: Session, public_id: str) -> PaymentGroup | None:
    return session.scalar(select(PaymentGroup).where(PaymentGroup.public_id == public_id))


def charge(
    session: Session, gateway: PaymentGateway, payment: Payment, *, return_url: str, now: datetime
) -> tuple[ChargeResult | None, bool]:
    """Ask the gateway to charge a processing payment and apply its answer.

    Returns the answer and whether it changed the payment (a webhook may have been first).
    No answer means the gateway could not be reached: the payment stays processing and the
    reconciliation job asks again with the same idempotency key.
    """
    method = payment.payment_method
    company = session.get(Company, payment.company_id)
    assert method is not None and company is not None
    try:
        company.gateway_customer_id = gateway.ensure_customer(
            existing=company.gateway_customer_id,
            company_ref=company.public_id,
            company_name=company.name,
        )
    except GatewayError:
        return None, False
    request = ChargeRequest(
        customer=company.gateway_customer_id,
        token=method.gateway_token,
        amount=payment.amount,
        currency=payment.currency,
        idempotency_key=payment.idempotency_key,
        # Only what never changes: a retry must repeat every parameter exactly.
        description=f"Billing portal payment {payment.public_id}",
        return_url=return_url,
        metadata={"payment": payment.public_id},
        off_session=payment.scheduled_for is not None,  # run by a job: nobody to authenticate
    )
    try:
        result = gateway.charge(request)
    except GatewayConflict:
        raise  # the same key with other parameters: asking again will not help
    except GatewayError:
        return None, False
    return result, apply_result(session, payment, result, now=now)


def apply_result(
    session: Session, payment: Payment, result: ChargeResult, *, now: datetime
) -> bool:
    """Move the payment (and its invoices) to what the gateway says. True if anything changed."""
    if result.status is ChargeStatus.SUCCEEDED:
        changed = _transition(session, payment, PaymentStatus.SUCCEEDED, result, now)
        if changed:
            _apply_to_invoices(session, payment, now)
            _record_outcome(session, payment, "Portal.PaymentMade")
        return changed
    if result.status is ChargeStatus.FAILED:
        changed = _transition(session, payment, PaymentStatus.FAILED, result, now)
        if changed:
            _release_invoices(session, payment, InvoiceStatus.PAYMENT_FAILED)
            _record_outcome(session, payment, "Portal.PaymentFailed")
        return changed
    # Still on its way (processing, or waiting for the customer to authenticate).
    values: dict[str, object] = {}
    if result.reference and payment.gateway_reference is None:
        values["gateway_reference"] = result.reference
    if result.status is ChargeStatus.REQUIRES_ACTION and result.action_url != payment.action_url:
        values["action_url"] = result.action_url
    if not values or payment.status in FINAL:
        return False
    return _move(session, payment, IN_FLIGHT, **values)


def _move(
    session: Session, payment: Payment, sources: Sequence[PaymentStatus], **values: object
) -> bool:
    """The one way a payment row changes: a conditional UPDATE from one of `sources`, so two
    writers (a webhook and a job, a replay) can never both move it. True if this one did."""
    changed = session.execute(
        update(Payment)
        .where(Payment.id == payment.id, Payment.status.in_(sources))
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    session.refresh(payment)
    return bool(changed)


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
    for allocation in payment.allocations:
        paid = Invoice.amount_paid + allocation.amount
        done = session.execute(
            update(Invoice)
            .where(Invoice.id == allocation.invoice_id, paid <= Invoice.total)
            .values(
                amount_paid=paid,
                status=case(
                    (paid == Invoice.total, InvoiceStatus.PAID.value),
                    else_=InvoiceStatus.PARTIALLY_PAID.value,
                ),
                paid_at=case((paid == Invoice.total, now), else_=Invoice.paid_at),
                version=Invoice.version + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if not done:  # reservations make this unreachable; the CHECK constraint backs it up
            raise RuntimeError(f"payment {payment.public_id} would overpay an invoice")
    _expire_invoices(session, payment)


def _release_invoices(session: Session, payment: Payment, status: InvoiceStatus) -> None:
    """After a failure: invoices that no other payment is processing take `status`."""
    ids = [a.invoice_id for a in payment.allocations]
    busy = reserved_amounts(session, ids, statuses=(PaymentStatus.PROCESSING,))
    free = [invoice_id for invoice_id in ids if invoice_id not in busy]
    if free:
        session.execute(
            update(Invoice)
            .where(Invoice.id.in_(free), Invoice.status == InvoiceStatus.PROCESSING)
            .values(status=status, version=Invoice.version + 1)
            .execution_options(synchronize_session=False)
        )
    _expire_invoices(session, payment)


def _expire_invoices(session: Session, payment: Payment) -> None:
    for allocation in payment.allocations:
        invoice = session.identity_map.get(session.identity_key(Invoice, allocation.invoice_id))
        if invoice is not None:
            session.expire(invoice)


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
    return changed


def start_scheduled(session: Session, payment: Payment, *, today: date, now: datetime) -> bool:
    """A scheduled payment whose day has come becomes processing (once, whoever asks)."""
    if payment.scheduled_for is None or payment.scheduled_for > today:
        return False
    invoices = [a.invoice for a in payment.allocations]
    reserved_elsewhere = reserved_amounts(
        session, [a.invoice_id for a in payment.allocations], excluding=payment.id
    )
    for allocation, invoice in zip(payment.allocations, invoices, strict=True):
        if allocation.amount > invoice.balance_due - reserved_elsewhere.get(invoice.id, 0):
            # Paid some other way since it was scheduled: charging would overpay.
            _transition(
                session,
                payment,
                PaymentStatus.CANCELED,
                ChargeResult(ChargeStatus.FAILED, None),
                now,
                failure_code="invoice_already_paid",
            )
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


def due_scheduled(session: Session, today: date) -> list[int]:
    return list(
        session.scalars(
            select(Payment.id).where(
                Payment.status == PaymentStatus.SCHEDULED, Payment.scheduled_for <= today
            )
        )
    )


def charging_since(payment: Payment) -> datetime:
    return payment.charging_since or payment.created_at


def stuck_processing(session: Session, before: datetime) -> list[int]:
    """Processing since before `before`, or waiting for 3-D Secure for longer than allowed.

    A payment with no gateway reference drops out once its key may be forgotten by the
    gateway (reconcile has reported it by then): asking again could charge twice.
    """
    since = func.coalesce(Payment.charging_since, Payment.created_at)
    return list(
        session.scalars(
            select(Payment.id).where(
                Payment.status == PaymentStatus.PROCESSING,
                or_(
                    and_(Payment.action_url.is_(None), since < before),
                    since < before - ACTION_TIMEOUT,
                ),
                or_(
                    Payment.gateway_reference.is_not(None),
                    since > before - KEY_LIFETIME - REVIEW_WINDOW,
                ),
            )
        )
    )


def _with_details(condition: Any) -> Select[Payment]:
    """Payments with their account and group (joined), allocations, their invoices and method
    (three queries)."""
    return (
        select(Payment)
        .where(condition)
        .options(
            joinedload(Payment.billing_account),
            joinedload(Payment.group),
            selectinload(Payment.allocations).selectinload(PaymentAllocation.invoice),
            selectinload(Payment.payment_method),
        )
    )


def get_payment(session: Session, public_id: str) -> Payment | None:
    return session.scalar(_with_details(Payment.public_id == public_id))


# gateway callbacks ------------------------------------------------------------------------


class WebhookOutcome(enum.StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"  # already in that state, or a late event for a settled payment
    DUPLICATE = "duplicate"  # this event id was seen before
    IGNORED = "ignored"  # not an event the portal acts on, or not one of its payments


def record_event(session: Session, gateway_name: str, event: ChargeEvent, now: datetime) -> bool:
    """Remember the event id; False when it was already there (a replay)."""
    try:
        with session.begin_nested():
            session.add(
                GatewayEvent(
                    gateway=gateway_name,
                    event_id=event.event_id,
                    kind=event.kind[:60],
                    reference=event.reference,
                    received_at=now,
                )
            )
    except IntegrityError:
        return False
    return True


def payment_by_public_id(session: Session, public_id: str, gateway_name: str) -> Payment | None:
    return session.scalar(
        _with_details(Payment.public_id == public_id).where(Payment.gateway == gateway_name)
    )


def payment_by_reference(session: Session, reference: str) -> Payment | None:
    return session.scalar(_with_details(Payment.gateway_reference == reference))


def get_payment_by_id(session: Session, payment_id: int) -> Payment | None:
    return session.scalar(_with_details(Payment.id == payment_id))
