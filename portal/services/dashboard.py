"""What the customer owes, and how much credit is left.

The balances, counts and aging come from the tallies the database keeps (services.tallies), so
their cost does not grow with the number of invoices.

Every figure has one scope. What is owed (balance, counts, aging, activity) is the user's scope:
the whole company for a customer.admin, the granted billing accounts for a customer. Credit is
the company's: its limit against what every account owes. A restricted user's dashboard shows it
in a region of its own that says so (`Viewing` names the page's scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import BillingAccount, Company, Invoice, Payment, PaymentStatus
from portal.services import tallies


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
    # Per currency, what is owed outside disputes: the currencies "Pay balance" is offered in.
    payable: dict[str, int]
    open_count: int
    overdue_count: int
    next_due: date | None

    @property
    def owed_currencies(self) -> list[str]:
        """The currencies something is owed in outside disputes, the company's first: one "Pay
        balance" each (what unfinished payments hold is the form's to leave out)."""
        others = sorted(
            c for c, amount in self.payable.items() if amount > 0 and c != self.currency
        )
        return ([self.currency] if self.payable.get(self.currency, 0) > 0 else []) + others


def account_summary(session: Session, today: date) -> AccountSummary:
    scope = tenancy.current_scope(session)
    company = session.get_one(Company, scope.company_id)
    owed = tallies.owed_by_currency(session)
    balances = {currency: balance for currency, (balance, _free) in owed.items()}
    if scope.company_wide:
        exposure = balances.get(company.currency, 0)
    else:
        # Credit is a company-level fact: exposure counts every account of the company.
        with tenancy.widened(session):
            exposure = tallies.balances_by_currency(session).get(company.currency, 0)
    counts = tallies.owing(session, today)
    remaining = company.credit_limit - exposure
    return AccountSummary(
        customer_name=company.name,
        currency=company.currency,
        balance=balances.get(company.currency, 0),
        credit_limit=company.credit_limit,
        available_credit=max(0, remaining),
        over_limit_by=max(0, -remaining),
        other_currencies={c: v for c, v in balances.items() if c != company.currency and v},
        payable={currency: free for currency, (_balance, free) in owed.items()},
        open_count=counts.open_count,
        overdue_count=counts.overdue_count,
        next_due=counts.next_due,
    )


AGING_BUCKETS = tallies.AGING_BUCKETS


@dataclass(frozen=True)
class AgingBucket:
    key: str
    amount: int
    count: int


def aging(session: Session, today: date) -> list[AgingBucket]:
    """What is owed by how late it is (company currency only), from the tallies."""
    scope = tenancy.current_scope(session)
    company = session.get_one(Company, scope.company_id)
    return [AgingBucket(*bucket) for bucket in tallies.aging(session, today, company.currency)]


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
