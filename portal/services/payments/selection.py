"""Choosing what to pay: the invoices, what is still available on each (the balance minus what
unfinished payments hold), and the amounts typed for them (`money.parse_amount`, the one rule)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session, joinedload

from portal.db import holds_sqlite_write_lock
from portal.models import (
    BillingAccount,
    Company,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    PaymentMethod,
    PaymentStatus,
)
from portal.services import money
from portal.services.invoices import PAYABLE
from portal.services.payments.rules import (
    IN_FLIGHT,
    MAX_INVOICES,
    MAX_SCHEDULE_DAYS,
    FieldError,
    Problem,
)


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


def select_invoices(session: Session, public_ids: Sequence[str]) -> Selection:
    """The invoices to pay, oldest first, each with what is still available to pay on it, as
    the form and its review show them (paying reads them again under their lock:
    `creation.lock_selection`)."""
    ids, problem = chosen_ids(public_ids)
    if problem is not None:
        return Selection(problem=problem)
    query = invoices_query(session, ids, lock=False)
    return judge(session, ids, list(session.scalars(query)))


@dataclass(frozen=True)
class Balance:
    """What "Pay balance" picks in one currency: the oldest `len(public_ids)` of `found`."""

    currency: str
    public_ids: list[str]
    found: int

    @property
    def cut(self) -> bool:
        return self.found > len(self.public_ids)


def balance_ids(session: Session, currency: str, *, limit: int = MAX_INVOICES) -> Balance:
    """Every invoice in `currency` the user's scope may pay, oldest due first, as the invoice
    list's "Select all" picks them: payable (open, partially paid, failed, or processing with
    something left), not disputed, void or paid, and not wholly held by scheduled or processing
    payments; at most `limit` of them (the form's own maximum). One query (the tenant scope
    applies to it as to every read)."""
    held = (
        select(
            PaymentAllocation.invoice_id.label("invoice_id"),
            func.sum(PaymentAllocation.amount).label("held"),
        )
        .join(Payment, Payment.id == PaymentAllocation.payment_id)
        .where(Payment.status.in_(IN_FLIGHT))
        .group_by(PaymentAllocation.invoice_id)
        .subquery()
    )
    rows = session.execute(
        select(Invoice.public_id, func.count().over())
        .outerjoin(held, held.c.invoice_id == Invoice.id)
        .where(
            Invoice.currency == currency.upper(),
            Invoice.status.in_((*PAYABLE, InvoiceStatus.PROCESSING)),
            Invoice.balance_due - func.coalesce(held.c.held, 0) > 0,
        )
        .order_by(Invoice.due_date, Invoice.issue_date, Invoice.number, Invoice.id)
        .limit(max(limit, 1))
    ).all()
    return Balance(
        currency=currency.upper(),
        public_ids=[public_id for public_id, _found in rows][:limit],
        found=int(rows[0][1]) if rows else 0,
    )


def chosen_ids(public_ids: Sequence[str]) -> tuple[list[str], Problem | None]:
    """The distinct invoice ids asked for, or why there is nothing to look up."""
    ids = list(dict.fromkeys(pid for pid in public_ids if pid))
    if not ids:
        return ids, Problem.NOTHING_SELECTED
    if len(ids) > MAX_INVOICES:
        return ids, Problem.TOO_MANY
    return ids, None


def invoices_query(session: Session, public_ids: list[str], *, lock: bool) -> Select[Any]:
    """The chosen invoices with their billing accounts (joined: one statement); with `lock`,
    locked until this transaction ends and read afresh."""
    query = (
        select(Invoice)
        .where(Invoice.public_id.in_(public_ids))
        .order_by(Invoice.id)
        .options(joinedload(Invoice.billing_account, innerjoin=True))
    )
    if lock:
        # Re-read what an earlier, unlocked read of this request left in the identity map: the
        # locked row is the truth (a payment may have completed while we waited for it).
        query = _locked(session, query, public_ids).execution_options(populate_existing=True)
    return query


def judge(session: Session, public_ids: list[str], invoices: list[Invoice]) -> Selection:
    """What is available on each of the invoices read for `public_ids` (under the lock when
    paying: the amounts other payments hold are read after it, so they include any payment
    committed while this one waited)."""
    if len(invoices) != len(public_ids):
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
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        # SQLite has no row locks; a write takes the database's write lock for the transaction.
        # A writing unit's transaction took it when it began (BEGIN IMMEDIATE), and one that
        # has written holds it: only a transaction that has not needs a write to take it.
        if not holds_sqlite_write_lock(connection):
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
