"""What the scope's invoices add up to, read from the tallies the database keeps.

`invoice_tallies` (migration 0010) holds, per billing account, currency, status and due date,
how many invoices there are and what they still owe, kept by triggers in the same transaction as
every change to an invoice. Every figure here reads those rows, never the invoices: its cost
follows the number of distinct due dates still owed on, not the customer's history. The ORM
tenancy filter scopes the rows like any account-owned table.

`recount` computes the same rows from the invoices themselves: the check that the database kept
them right (`flask --app wsgi tallies check`, and the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, not_, select
from sqlalchemy.orm import Session

from portal.models import OUTSTANDING, SETTLED_DUE, Invoice, InvoiceStatus, InvoiceTally
from portal.models.invoice import OVERDUE_ELIGIBLE

T = InvoiceTally
_OUTSTANDING = [s.value for s in OUTSTANDING]
_ELIGIBLE = [s.value for s in OVERDUE_ELIGIBLE]
_OWING = and_(T.status.in_(_OUTSTANDING), T.due_date > SETTLED_DUE)


def _overdue(today: date) -> Any:
    """Rows of invoices that are overdue on `today` (as Invoice.is_overdue_on)."""
    return and_(T.status.in_(_ELIGIBLE), T.due_date > SETTLED_DUE, T.due_date < today)


def balances_by_currency(session: Session) -> dict[str, int]:
    """What the scope owes, per currency (every outstanding status)."""
    return {currency: owed for currency, (owed, _payable) in owed_by_currency(session).items()}


def owed_by_currency(session: Session) -> dict[str, tuple[int, int]]:
    """Per currency, what the scope owes (every outstanding status) and how much of it is not
    held by a dispute (what "Pay balance" may offer): one statement over the tallies."""
    payable = case((T.status != InvoiceStatus.DISPUTED.value, T.balance), else_=0)
    rows = session.execute(
        select(
            T.currency,
            func.coalesce(func.sum(T.balance), 0),
            func.coalesce(func.sum(payable), 0),
        )
        .where(T.status.in_(_OUTSTANDING))
        .group_by(T.currency)
    ).all()
    return {currency: (int(owed), int(free)) for currency, owed, free in rows}


@dataclass(frozen=True)
class Owing:
    open_count: int  # invoices with something left to pay
    overdue_count: int
    next_due: date | None  # the earliest due date from today on


def owing(session: Session, today: date) -> Owing:
    row = session.execute(
        select(
            func.coalesce(func.sum(T.invoice_count), 0),
            func.coalesce(func.sum(case((_overdue(today), T.invoice_count), else_=0)), 0),
            func.min(case((and_(T.due_date >= today, T.invoice_count > 0), T.due_date))),
        ).where(_OWING)
    ).one()
    return Owing(int(row[0]), int(row[1]), row[2])


AGING_BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")


def aging(session: Session, today: date, currency: str) -> list[tuple[str, int, int]]:
    """(bucket, amount, count) of what is owed in `currency`, by how late it is."""

    def days_ago(n: int) -> date:
        return today - timedelta(days=n)

    due = T.due_date
    conditions = {
        "current": due >= today,
        "1-30": and_(due < today, due >= days_ago(30)),
        "31-60": and_(due < days_ago(30), due >= days_ago(60)),
        "61-90": and_(due < days_ago(60), due >= days_ago(90)),
        "90+": due < days_ago(90),
    }
    columns: list[Any] = []
    for key in AGING_BUCKETS:
        for column in (T.balance, T.invoice_count):
            columns.append(func.coalesce(func.sum(case((conditions[key], column), else_=0)), 0))
    row = session.execute(select(*columns).where(_OWING, T.currency == currency)).one()
    return [(key, int(row[2 * i]), int(row[2 * i + 1])) for i, key in enumerate(AGING_BUCKETS)]


# The invoice list's status filters, by the status each shows ("overdue" aside: it follows from
# the due date). Open and partially paid show only those not overdue.
FILTER_STATUS = {
    "open": InvoiceStatus.OPEN,
    "partially_paid": InvoiceStatus.PARTIALLY_PAID,
    "processing": InvoiceStatus.PROCESSING,
    "failed": InvoiceStatus.PAYMENT_FAILED,
    "disputed": InvoiceStatus.DISPUTED,
    "paid": InvoiceStatus.PAID,
}


def invoice_count(session: Session, status: str, today: date) -> int:
    """How many of the scope's invoices the list shows under a status filter (see
    portal.services.invoices._status_condition): "all", or one of its filters."""
    statement = select(func.coalesce(func.sum(T.invoice_count), 0))
    shown = FILTER_STATUS.get(status)
    if status == "overdue":
        statement = statement.where(_overdue(today))
    elif shown in OVERDUE_ELIGIBLE:
        statement = statement.where(T.status == shown.value, not_(_overdue(today)))
    elif shown is not None:
        statement = statement.where(T.status == shown.value)
    return int(session.scalar(statement) or 0)


def recount(session: Session) -> dict[tuple[int, str, str, date], tuple[int, int]]:
    """The tallies as the scope's invoices say they should be (rows with no invoices left out)."""
    owes = and_(Invoice.status.in_(OUTSTANDING), Invoice.total - Invoice.amount_paid > 0)
    due = case((owes, Invoice.due_date), else_=literal(SETTLED_DUE))
    rows = session.execute(
        select(
            Invoice.billing_account_id,
            Invoice.currency,
            Invoice.status,
            due,
            func.count(),
            func.sum(Invoice.total - Invoice.amount_paid),
        ).group_by(Invoice.billing_account_id, Invoice.currency, Invoice.status, due)
    ).all()
    return {(a, c, InvoiceStatus(s).value, d): (int(n), int(b)) for a, c, s, d, n, b in rows}


def kept(session: Session) -> dict[tuple[int, str, str, date], tuple[int, int]]:
    """The tallies as the database kept them (rows with no invoices left out)."""
    rows = session.execute(
        select(T.billing_account_id, T.currency, T.status, T.due_date, T.invoice_count, T.balance)
    ).all()
    return {(a, c, s, d): (int(n), int(b)) for a, c, s, d, n, b in rows if n or b}
