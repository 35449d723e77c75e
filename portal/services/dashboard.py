"""What the customer owes, and how much credit is left."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import OUTSTANDING, Company, Invoice


@dataclass(frozen=True)
class AccountSummary:
    customer_name: str
    currency: str
    balance: int  # what the user's accounts owe, minor units of `currency`
    credit_limit: int
    available_credit: int  # credit limit minus the whole company's exposure, never below zero
    over_limit_by: int
    other_currencies: dict[str, int]  # balances of invoices in other currencies
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
