"""What the customer owes, and how much credit is left.

Every figure has one scope. What is owed (balance, counts, aging, activity) is the user's scope:
the whole company for a customer.admin, the granted billing accounts for a customer. Credit is
the company's: its limit against what every account owes. A restricted user's dashboard shows it
in a region of its own that says so (`Viewing` names the page's scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import OUTSTANDING, BillingAccount, Company, Invoice, Payment, PaymentStatus


@dataclass(frozen=True)
class Viewing:
    """The scope a page's figures cover: the whole company, or these billing accounts."""

    company_wide: bool
    accounts: list[str]  # the names of the accounts in scope, by name


def viewing(session: Session) -> Viewing:
    scope = tenancy.current_scope(session)
    names = session.scalars(select(BillingAccount.name).order_by(BillingAccount.name)).all()
    return Viewing(company_wide=scope.company_wide, accounts=list(names))


@dataclass(frozen=True)
class AccountSummary:
    customer_name: str
    currency: str
    balance: int  # what the accounts in scope owe, minor units of `currency`
    # Company-level, whatever the scope: the limit, and what is left of it once every account's
    # balance is counted (never below zero).
    credit_limit: int
    available_credit: int
    over_limit_by: int
    other_currencies: dict[str, int]  # balances in scope of invoices in other currencies
    open_count: int
    overdue_count: int
    next_due: date | None


def _balances_by_currency(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Invoice.currency, func.coalesce(func.sum(Invoice.balance_due), 0))
        .where(Invoice.status.in_(OUTSTANDING))
        .group_by(Invoice.currency)
    ).all()
    return {currency: int(total) for currency, total in rows}


def account_summary(session: Session, today: date) -> AccountSummary:
    scope = tenancy.current_scope(session)
    company = session.get_one(Company, scope.company_id)
    balances = _balances_by_currency(session)
    if scope.company_wide:
        exposure = balances.get(company.currency, 0)
    else:
        # Credit is a company-level fact: exposure counts every account of the company.
        with tenancy.widened(session):
            exposure = _balances_by_currency(session).get(company.currency, 0)
    counts = session.execute(
        select(
            func.count(Invoice.id),
            func.count(Invoice.id).filter(Invoice.is_overdue_on(today)),
            func.min(Invoice.due_date).filter(Invoice.due_date >= today),
        ).where(Invoice.status.in_(OUTSTANDING), Invoice.balance_due > 0)
    ).one()
    remaining = company.credit_limit - exposure
    return AccountSummary(
        customer_name=company.name,
        currency=company.currency,
        balance=balances.get(company.currency, 0),
        credit_limit=company.credit_limit,
        available_credit=max(0, remaining),
        over_limit_by=max(0, -remaining),
        other_currencies={c: v for c, v in balances.items() if c != company.currency and v},
        open_count=int(counts[0]),
        overdue_count=int(counts[1]),
        next_due=counts[2],
    )


AGING_BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")


@dataclass(frozen=True)
class AgingBucket:
    key: str
    amount: int
    count: int


def aging(session: Session, today: date) -> list[AgingBucket]:
    """What is owed by how late it is, in one query (company currency only)."""
    scope = tenancy.current_scope(session)
    company = session.get_one(Company, scope.company_id)

    def days_ago(n: int) -> date:
        return today - timedelta(days=n)

    conditions = {
        "current": Invoice.due_date >= today,
        "1-30": and_(Invoice.due_date < today, Invoice.due_date >= days_ago(30)),
        "31-60": and_(Invoice.due_date < days_ago(30), Invoice.due_date >= days_ago(60)),
        "61-90": and_(Invoice.due_date < days_ago(60), Invoice.due_date >= days_ago(90)),
        "90+": Invoice.due_date < days_ago(90),
    }
    columns: list[Any] = []
    for key in AGING_BUCKETS:
        columns.append(func.coalesce(func.sum(case((conditions[key], Invoice.balance_due))), 0))
        columns.append(func.count(case((conditions[key], Invoice.id))))
    row = session.execute(
        select(*columns).where(
            Invoice.status.in_(OUTSTANDING),
            Invoice.balance_due > 0,
            Invoice.currency == company.currency,
        )
    ).one()
    return [
        AgingBucket(key, int(row[2 * i]), int(row[2 * i + 1]))
        for i, key in enumerate(AGING_BUCKETS)
    ]


@dataclass(frozen=True)
class Activity:
    kind: str  # "invoice" or "payment"
    at: datetime
    label: str
    amount: int
    currency: str
    status: str
    public_id: str


def recent_activity(session: Session, limit: int = 6) -> list[Activity]:
    """The latest invoices and payments, newest first: two small queries."""
    issued = session.scalars(select(Invoice).order_by(Invoice.created_at.desc()).limit(limit))
    paid = session.scalars(
        select(Payment)
        .where(Payment.status != PaymentStatus.PENDING)
        .order_by(Payment.created_at.desc())
        .limit(limit)
    )
    items = [
        Activity(
            "invoice", i.created_at, i.number, i.total, i.currency, i.status.value, i.public_id
        )
        for i in issued
    ] + [
        Activity(
            "payment",
            p.created_at,
            p.reference,
            p.amount,
            p.currency,
            p.status.value,
            p.public_id,
        )
        for p in paid
    ]
    return sorted(items, key=lambda a: a.at, reverse=True)[:limit]
