"""A statement's figures, read from the database (what `data.StatementData` holds).

Per billing account and currency: the opening balance (every invoice issued before the start
date, less the credit notes issued and the payments processed before it), the movements of the
range in date order (invoices on their issue date, credit notes on theirs, succeeded payments
on the day they were processed, UTC), each with the running balance, the closing balance, and
the aging of what was still owed at the end of the end date. Void invoices are left out.

The lines are streamed (three ordered queries, merged), never held as a list, so a statement of
any length costs the same memory; totals and counts come from aggregate queries first. The
session's tenant scope is the requesting user's: what they may no longer see is not read.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from portal.models import (
    BillingAccount,
    CreditNote,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    PaymentMethod,
    PaymentStatus,
)
from portal.services.statements.data import Aging, Line, LineKind, Section

BATCH = 1000  # rows fetched at a time while streaming lines


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


@dataclass(frozen=True)
class _Window:
    start: date
    end: date

    @property
    def start_at(self) -> datetime:
        return _start_of(self.start)

    @property
    def end_before(self) -> datetime:  # the first instant after the end date
        return _start_of(self.end + timedelta(days=1))


def _invoices(account_id: int, currency: str) -> ColumnElement[bool]:
    return and_(
        Invoice.billing_account_id == account_id,
        Invoice.currency == currency,
        Invoice.status != InvoiceStatus.VOID,
    )


def _credits(account_id: int, currency: str) -> ColumnElement[bool]:
    return and_(CreditNote.billing_account_id == account_id, CreditNote.currency == currency)


def _payments(account_id: int, currency: str) -> ColumnElement[bool]:
    return and_(
        Payment.billing_account_id == account_id,
        Payment.currency == currency,
        Payment.status == PaymentStatus.SUCCEEDED,
        Payment.processed_at.is_not(None),
    )


def currencies(session: Session, account_id: int, end: date, default: str) -> list[str]:
    """The currencies an account has invoices in up to `end` (one section each); an account
    with none still gets a section, in `default` (the company's currency), saying so."""
    found = set(
        session.scalars(
            select(Invoice.currency)
            .where(
                Invoice.billing_account_id == account_id,
                Invoice.status != InvoiceStatus.VOID,
                Invoice.issue_date <= end,
            )
            .distinct()
        )
    )
    return sorted(found) or [default]


def _sum(session: Session, column: Any, *conditions: ColumnElement[bool]) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(column), 0)).where(*conditions)) or 0)


def _count(session: Session, column: Any, *conditions: ColumnElement[bool]) -> int:
    return int(session.scalar(select(func.count(column)).where(*conditions)) or 0)


def section(
    session: Session, account: BillingAccount, currency: str, start: date, end: date
) -> Section:
    window = _Window(start, end)
    invoices = _invoices(account.id, currency)
    credits = _credits(account.id, currency)
    payments = _payments(account.id, currency)
    opening = (
        _sum(session, Invoice.total, invoices, Invoice.issue_date < start)
        - _sum(session, CreditNote.amount, credits, CreditNote.issue_date < start)
        - _sum(session, Payment.amount, payments, Payment.processed_at < window.start_at)
    )
    in_range_invoices = (invoices, Invoice.issue_date >= start, Invoice.issue_date <= end)
    in_range_credits = (credits, CreditNote.issue_date >= start, CreditNote.issue_date <= end)
    in_range_payments = (
        payments,
        Payment.processed_at >= window.start_at,
        Payment.processed_at < window.end_before,
    )
    debit = _sum(session, Invoice.total, *in_range_invoices)
    credit = _sum(session, CreditNote.amount, *in_range_credits) + _sum(
        session, Payment.amount, *in_range_payments
    )
    count = (
        _count(session, Invoice.id, *in_range_invoices)
        + _count(session, CreditNote.id, *in_range_credits)
        + _count(session, Payment.id, *in_range_payments)
    )
    return Section(
        account_name=account.name,
        account_number=account.number,
        currency=currency,
        opening=opening,
        closing=opening + debit - credit,
        total_debit=debit,
        total_credit=credit,
        line_count=count,
        lines=_Lines(session, account.id, currency, window, opening),
        aging=aging(session, account.id, currency, end),
    )


class _Lines:
    """The section's lines, read from the database when iterated (once per render)."""

    def __init__(
        self, session: Session, account_id: int, currency: str, window: _Window, opening: int
    ) -> None:
        self.session = session
        self.account_id = account_id
        self.currency = currency
        self.window = window
        self.opening = opening

    def __iter__(self) -> Iterator[Line]:
        balance = self.opening
        for _key, line in heapq.merge(
            self._invoice_lines(),
            self._credit_lines(),
            self._payment_lines(),
            key=lambda keyed: keyed[0],
        ):
            balance += line.debit - line.credit
            yield Line(
                line.day,
                line.kind,
                line.reference,
                line.description,
                line.debit,
                line.credit,
                balance,
                line.due,
            )

    def _stream(self, statement: Any) -> Iterator[Any]:
        yield from self.session.execute(statement.execution_options(yield_per=BATCH))

    def _invoice_lines(self) -> Iterator[tuple[tuple[Any, ...], Line]]:
        window = self.window
        rows = self._stream(
            select(
                Invoice.issue_date,
                Invoice.number,
                Invoice.reference,
                Invoice.total,
                Invoice.due_date,
            )
            .where(
                _invoices(self.account_id, self.currency),
                Invoice.issue_date >= window.start,
                Invoice.issue_date <= window.end,
            )
            .order_by(Invoice.issue_date, Invoice.number)
        )
        for day, number, reference, total, due in rows:
            line = Line(day, LineKind.INVOICE, number, reference or "", total, 0, 0, due)
            yield (day, 0, number), line

    def _credit_lines(self) -> Iterator[tuple[tuple[Any, ...], Line]]:
        window = self.window
        rows = self._stream(
            select(
                CreditNote.issue_date,
                CreditNote.number,
                CreditNote.reason,
                CreditNote.amount,
                Invoice.number,
            )
            .join(Invoice, Invoice.id == CreditNote.invoice_id)
            .where(
                _credits(self.account_id, self.currency),
                CreditNote.issue_date >= window.start,
                CreditNote.issue_date <= window.end,
            )
            .order_by(CreditNote.issue_date, CreditNote.number)
        )
        for day, number, reason, amount, invoice_number in rows:
            description = f"{invoice_number}: {reason}" if reason else invoice_number
            line = Line(day, LineKind.CREDIT_NOTE, number, description, 0, amount, 0)
            yield (day, 1, number), line

    def _payment_lines(self) -> Iterator[tuple[tuple[Any, ...], Line]]:
        window = self.window
        rows = self._stream(
            select(
                Payment.processed_at,
                Payment.reference,
                Payment.amount,
                PaymentMethod.brand,
                PaymentMethod.last4,
            )
            .outerjoin(PaymentMethod, PaymentMethod.id == Payment.payment_method_id)
            .where(
                _payments(self.account_id, self.currency),
                Payment.processed_at >= window.start_at,
                Payment.processed_at < window.end_before,
            )
            .order_by(Payment.processed_at, Payment.id)
        )
        for processed_at, reference, amount, brand, last4 in rows:
            day = (
                processed_at.astimezone(UTC).date() if processed_at.tzinfo else processed_at.date()
            )
            description = f"{brand.title()} •••• {last4}" if brand and last4 else ""
            line = Line(day, LineKind.PAYMENT, reference, description, 0, amount, 0)
            yield (day, 2, reference), line


def aging(session: Session, account_id: int, currency: str, end: date) -> Aging:
    """What each invoice issued by `end` still owed at the end of that day, by days past due.
    Invoices settled before then are skipped by their paid time (no history is summed)."""
    end_before = _start_of(end + timedelta(days=1))
    paid = (
        select(func.coalesce(func.sum(PaymentAllocation.amount), 0))
        .join(Payment, Payment.id == PaymentAllocation.payment_id)
        .where(
            PaymentAllocation.invoice_id == Invoice.id,
            Payment.status == PaymentStatus.SUCCEEDED,
            Payment.processed_at < end_before,
        )
        .scalar_subquery()
    )
    credited = (
        select(func.coalesce(func.sum(CreditNote.amount), 0))
        .where(CreditNote.invoice_id == Invoice.id, CreditNote.issue_date <= end)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Invoice.due_date, Invoice.total - paid - credited).where(
            _invoices(account_id, currency),
            Invoice.issue_date <= end,
            or_(Invoice.paid_at.is_(None), Invoice.paid_at >= end_before),
        )
    )
    buckets = [0, 0, 0, 0, 0]
    for due, owed in rows:
        if owed is None or owed <= 0:
            continue
        late = (end - due).days
        index = 0 if late <= 0 else 1 if late <= 30 else 2 if late <= 60 else 3 if late <= 90 else 4
        buckets[index] += int(owed)
    return Aging(*buckets)


def sections(
    session: Session, accounts: Sequence[BillingAccount], start: date, end: date, currency: str
) -> list[Section]:
    return [
        section(session, account, in_currency, start, end)
        for account in accounts
        for in_currency in currencies(session, account.id, end, currency)
    ]
