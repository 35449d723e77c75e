"""Payment History: every payment in the user's scope, filtered, paged, or as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, joinedload, selectinload

from portal.models import Payment, PaymentAllocation, PaymentStatus
from portal.services import paging
from portal.services.dates import DateError, day_bounds, parse_date
from portal.services.money import to_decimal
from portal.services.receipts import method_label

PAGE_SIZE = paging.PAGE_SIZE
STATUSES = tuple(s.value for s in PaymentStatus if s is not PaymentStatus.PENDING)


@dataclass(frozen=True)
class HistoryQuery:
    status: str = ""
    date_from: date | None = None
    date_to: date | None = None
    page: int = 1
    zone: tzinfo = UTC  # the days of `date_from` and `date_to` are the viewer's


def read_query(args: Mapping[str, str]) -> tuple[HistoryQuery, dict[str, DateError]]:
    """The filters from query parameters, and what is wrong with the dates ("from", "to"). A
    refused date is left out of the query; an unknown status means all, a bad page the first."""
    errors: dict[str, DateError] = {}
    dates: dict[str, date | None] = {}
    for name in ("from", "to"):
        parsed = parse_date(args.get(name, ""))
        if isinstance(parsed, DateError):
            errors[name] = parsed
            parsed = None
        dates[name] = parsed
    status = args.get("status", "")
    try:
        page = int(args.get("page", "1"))
    except ValueError:
        page = 1
    query = HistoryQuery(status if status in STATUSES else "", dates["from"], dates["to"], page)
    return query, errors


HistoryPage = paging.Page[Payment]


def _filtered(query: HistoryQuery) -> Select[Any]:
    statement = select(Payment).where(Payment.status != PaymentStatus.PENDING)
    if query.status in STATUSES:
        statement = statement.where(Payment.status == PaymentStatus(query.status))
    start, end = day_bounds(query.date_from, query.date_to, query.zone)
    if start is not None:
        statement = statement.where(Payment.created_at >= start)
    if end is not None:
        statement = statement.where(Payment.created_at < end)
    return statement


def _loaded(statement: Select[Any]) -> Select[Any]:
    return statement.options(
        joinedload(Payment.billing_account),
        selectinload(Payment.allocations).selectinload(PaymentAllocation.invoice),
        selectinload(Payment.payment_method),
    ).order_by(Payment.created_at.desc(), Payment.id.desc())


def list_payments(session: Session, query: HistoryQuery) -> HistoryPage:
    """One page of payments, newest first, counted up to a bound (services.paging)."""
    statement = _filtered(query)
    bound = paging.count_bound(query.page, PAGE_SIZE)
    total, exact = paging.bounded_count(session, statement, bound)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, query.page), pages)
    items = session.scalars(
        _loaded(statement).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    ).all()
    return HistoryPage(list(items), total, page, PAGE_SIZE, exact)


def payments_after(
    session: Session,
    query: HistoryQuery,
    *,
    after: tuple[datetime, int] | None,
    limit: int,
) -> tuple[list[Payment], bool]:
    """Keyset pagination of the history (same filters, same order): up to `limit` payments
    after the one whose (created_at, id) is `after`, and whether more follow. The page's
    queries (the payments, then their allocations, invoices and methods), whatever the
    history."""
    statement = _filtered(query)
    if after is not None:
        statement = statement.where(
            paging.after_key([Payment.created_at, Payment.id], after, descending=True)
        )
    rows = list(session.scalars(_loaded(statement).limit(limit + 1)).unique())
    return rows[:limit], len(rows) > limit


CSV_HEADER = (
    "payment_id",
    "reference",
    "billing_account",
    "created_at",
    "status",
    "amount",
    "currency",
    "method",
    "receipt_number",
    "scheduled_for",
    "processed_at",
    "invoices",
    "failure_code",
)


def export_csv(session: Session, query: HistoryQuery) -> Iterator[str]:
    """Every matching payment (not only one page), a row each; amounts in major units. The
    query runs now, before the caller starts a response: a failure is an error page, never a
    download that stops half way."""
    payments = session.scalars(_loaded(_filtered(query))).unique().all()
    return _csv_rows(payments)


def _csv_rows(payments: Iterable[Payment]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        value = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return value

    writer.writerow(CSV_HEADER)
    yield flush()
    for payment in payments:
        writer.writerow(
            (
                payment.public_id,
                payment.reference,
                payment.billing_account.name,
                payment.created_at.isoformat(),
                payment.status.value,
                str(to_decimal(payment.amount, payment.currency)),
                payment.currency,
                method_label(payment),
                payment.receipt_number or "",
                payment.scheduled_for.isoformat() if payment.scheduled_for else "",
                payment.processed_at.isoformat() if payment.processed_at else "",
                " ".join(
                    f"{a.invoice.number}={to_decimal(a.amount, payment.currency)}"
                    for a in payment.allocations
                ),
                payment.failure_code or "",
            )
        )
        yield flush()
