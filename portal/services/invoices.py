"""Finding and reading invoices within the bound scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, and_, not_, select
from sqlalchemy.orm import Session, joinedload, selectinload

from portal.models import (
    OUTSTANDING,
    BillingAccount,
    CreditNote,
    Document,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    PaymentStatus,
)
from portal.models.invoice import OVERDUE_ELIGIBLE
from portal.services import invoice_search, paging, tallies

PAGE_SIZE = paging.PAGE_SIZE
STATUS_FILTERS = (
    "all",
    "open",
    "overdue",
    "partially_paid",
    "processing",
    "failed",
    "disputed",
    "paid",
)
SORT_KEYS = ("date", "due", "amount", "status", "number")
DEFAULT_SORT = "-date"
PAYABLE = (
    InvoiceStatus.OPEN,
    InvoiceStatus.PARTIALLY_PAID,
    InvoiceStatus.PAYMENT_FAILED,
)


@dataclass(frozen=True)
class InvoiceQuery:
    status: str = "all"
    q: str = ""
    date_from: date | None = None
    date_to: date | None = None
    sort: str = DEFAULT_SORT
    page: int = 1
    account: str = ""  # a billing account's public id (the API's filter); "" for all in scope


InvoicePage = paging.Page[Invoice]


def _status_condition(status: str, today: date) -> Any:
    """The list's status filter (one mapping with its count: tallies.FILTER_STATUS)."""
    overdue = Invoice.is_overdue_on(today)
    if status == "overdue":
        return overdue
    shown = tallies.FILTER_STATUS.get(status)
    if shown is None:
        return None
    condition = Invoice.status == shown
    return and_(condition, not_(overdue)) if shown in OVERDUE_ELIGIBLE else condition


def _filtered(query: InvoiceQuery, today: date) -> Select[Invoice]:
    statement = select(Invoice)
    condition = _status_condition(query.status, today)
    if condition is not None:
        statement = statement.where(condition)
    if query.date_from:
        statement = statement.where(Invoice.issue_date >= query.date_from)
    if query.date_to:
        statement = statement.where(Invoice.issue_date <= query.date_to)
    text = query.q.strip()
    if text:
        statement = statement.where(invoice_search.matching(text))
    if query.account:
        statement = statement.where(
            Invoice.billing_account_id.in_(
                select(BillingAccount.id).where(BillingAccount.public_id == query.account)
            )
        )
    return statement


def sort_column(sort: str) -> tuple[Any, bool]:
    """The column the list sorts on for `sort` ("-date": issue date, newest first), and whether
    it runs descending. The invoice's id breaks ties, in the same direction."""
    column = {
        "date": Invoice.issue_date,
        "due": Invoice.due_date,
        "amount": Invoice.total,
        "status": Invoice.status,
        "number": Invoice.number,
    }.get(sort.lstrip("-"), Invoice.issue_date)
    return column, sort.startswith("-")


def _ordering(sort: str, *, reverse: bool = False) -> list[Any]:
    """The list's order for `sort` ("-date": newest first), or its exact reverse."""
    column, descending = sort_column(sort)
    descending = descending != reverse
    tie = Invoice.id.desc() if descending else Invoice.id.asc()
    return [column.desc() if descending else column.asc(), tie]


def sort_value(invoice: Invoice, sort: str) -> Any:
    """The invoice's value of the column the list sorts on (the first half of its keyset key)."""
    column, _descending = sort_column(sort)
    return getattr(invoice, column.key)


def invoices_after(
    session: Session,
    query: InvoiceQuery,
    today: date,
    *,
    after: tuple[Any, int] | None,
    limit: int,
) -> tuple[list[Invoice], bool]:
    """Keyset pagination of the list (same filters, same order): up to `limit` invoices after
    the one whose key (`sort_value`, id) is `after`, and whether more follow. One query, which
    reads one page through the sort's index whatever the history."""
    statement = _filtered(query, today).options(joinedload(Invoice.billing_account))
    if after is not None:
        column, descending = sort_column(query.sort)
        statement = statement.where(
            paging.after_key([column, Invoice.id], after, descending=descending)
        )
    rows = list(session.scalars(statement.order_by(*_ordering(query.sort)).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_invoices(session: Session, query: InvoiceQuery, today: date) -> InvoicePage:
    """One page of the scope's invoices: two queries whose cost does not grow with the history.

    The count comes from the tallies the database keeps (services.tallies) when only a status
    narrows the list. A search or a date range is counted up to a bound (services.paging): past
    it the page says "more than". A page past the
    middle of an exactly counted list is read from the far end in reverse, so the last page
    costs what the first does.
    """
    statement = _filtered(query, today)
    narrowed = bool(query.q.strip() or query.date_from or query.date_to or query.account)
    if narrowed:
        bound = paging.count_bound(query.page, PAGE_SIZE)
        total, exact = paging.bounded_count(session, statement, bound)
    else:
        total, exact = tallies.invoice_count(session, query.status, today), True
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, query.page), pages)
    loaded = statement.options(joinedload(Invoice.billing_account))
    after_page = total - page * PAGE_SIZE  # how many come after this page
    if exact and page > 1 and after_page < (page - 1) * PAGE_SIZE:
        rows = session.scalars(
            loaded.order_by(*_ordering(query.sort, reverse=True))
            .limit(PAGE_SIZE + min(0, after_page))
            .offset(max(0, after_page))
        ).all()
        items = list(reversed(rows))
    else:
        items = list(
            session.scalars(
                loaded.order_by(*_ordering(query.sort))
                .limit(PAGE_SIZE)
                .offset((page - 1) * PAGE_SIZE)
            ).all()
        )
    return InvoicePage(items, total, page, PAGE_SIZE, exact)


def has_outstanding(session: Session) -> bool:
    """Is anything owed at all, in the scope?"""
    return (
        session.scalar(
            select(Invoice.id)
            .where(Invoice.status.in_(OUTSTANDING), Invoice.balance_due > 0)
            .limit(1)
        )
        is not None
    )


def get_invoice(session: Session, public_id: str) -> Invoice | None:
    """The invoice with its lines and account, if the scope may see it (else None: a 404)."""
    return session.scalars(
        select(Invoice)
        .where(Invoice.public_id == public_id)
        .options(selectinload(Invoice.lines), joinedload(Invoice.billing_account))
    ).one_or_none()


def get_invoices(session: Session, public_ids: list[str]) -> list[Invoice] | None:
    """All of them in the order asked, or None if any is unknown to the scope."""
    wanted = list(dict.fromkeys(public_ids))
    found = {
        i.public_id: i
        for i in session.scalars(
            select(Invoice)
            .where(Invoice.public_id.in_(wanted))
            .options(selectinload(Invoice.lines), joinedload(Invoice.billing_account))
        )
    }
    if len(found) != len(wanted):
        return None
    return [found[p] for p in wanted]


@dataclass(frozen=True)
class AppliedPayment:
    payment: Payment
    amount: int  # the part applied to this invoice


def payments_applied(session: Session, invoice: Invoice) -> list[AppliedPayment]:
    rows = session.execute(
        select(Payment, PaymentAllocation.amount)
        .join(PaymentAllocation, PaymentAllocation.payment_id == Payment.id)
        .where(
            PaymentAllocation.invoice_id == invoice.id,
            Payment.status.in_(
                (PaymentStatus.SUCCEEDED, PaymentStatus.PROCESSING, PaymentStatus.FAILED)
            ),
        )
        .options(joinedload(Payment.payment_method))
        .order_by(Payment.created_at)
    ).all()
    return [AppliedPayment(payment, int(amount)) for payment, amount in rows]


def documents_for(session: Session, invoice: Invoice) -> list[Document]:
    return list(
        session.scalars(
            select(Document).where(Document.invoice_id == invoice.id).order_by(Document.title)
        )
    )


def credits_applied(session: Session, invoice: Invoice) -> list[CreditNote]:
    """The credit notes given against the invoice, oldest first, each with its document (when
    the scope may see it), in one query."""
    return list(
        session.scalars(
            select(CreditNote)
            .where(CreditNote.invoice_id == invoice.id)
            .options(joinedload(CreditNote.document))
            .order_by(CreditNote.issue_date, CreditNote.id)
        )
    )


def credit_numbers(session: Session, invoices: list[Invoice]) -> dict[int, list[str]]:
    """The numbers of the credit notes given against each of `invoices` (by invoice id), in
    one query: what an invoice's PDF lists under "Credits applied"."""
    found: dict[int, list[str]] = {invoice.id: [] for invoice in invoices}
    credited = [invoice.id for invoice in invoices if invoice.amount_credited]
    if credited:
        rows = session.execute(
            select(CreditNote.invoice_id, CreditNote.number)
            .where(CreditNote.invoice_id.in_(credited))
            .order_by(CreditNote.issue_date, CreditNote.id)
        )
        for invoice_id, number in rows:
            found[invoice_id].append(number)
    return found


def is_payable(invoice: Invoice) -> bool:
    return invoice.status in PAYABLE and invoice.balance_due > 0
