"""A statement of made-up figures for the formats' tests and benchmark: lines from a generator
(read once, never held), running balances and totals that add up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

from portal.services.statements.data import Aging, Line, LineKind, Section, StatementData

START = date(2026, 1, 1)
END = date(2026, 3, 31)


def lines(count: int, opening: int, *, descriptions: tuple[str, ...] = ()) -> Iterator[Line]:
    """`count` lines: an invoice, then a payment or a credit note, in date order."""
    balance = opening
    span = (END - START).days
    for index in range(count):
        day = START + timedelta(days=index * span // max(count, 1))
        if index % 2 == 0:
            kind, debit, credit = LineKind.INVOICE, 10_000 + (index * 7919) % 250_000, 0
            reference = f"INV-{1000 + index}"
            description = f"PO-{4000 + index}"
        elif index % 10 == 3:
            kind, debit, credit = LineKind.CREDIT_NOTE, 0, 2_500 + index % 1000
            reference = f"CN-{300 + index}"
            description = ""
        else:
            kind, debit, credit = LineKind.PAYMENT, 0, 9_000 + (index * 104729) % 200_000
            reference = f"PMT-{index:06d}"
            description = "Visa ending 4242"
        if descriptions:
            description = descriptions[index % len(descriptions)]
        balance += debit - credit
        due = day + timedelta(days=30) if kind is LineKind.INVOICE else None
        yield Line(day, kind, reference, description, debit, credit, balance, due)


def totals(count: int, opening: int) -> tuple[int, int, int]:
    """Total debit, total credit and closing balance of `lines(count, opening)`."""
    debit = credit = 0
    for line in lines(count, opening):
        debit += line.debit
        credit += line.credit
    return debit, credit, opening + debit - credit


def section(
    count: int,
    *,
    opening: int = 123_450,
    currency: str = "USD",
    name: str = "Main account",
    number: str = "ACC-1001",
    descriptions: tuple[str, ...] = (),
) -> Section:
    debit, credit, closing = totals(count, opening)
    aging = Aging(current=closing // 2, days_1_30=closing - closing // 2)
    return Section(
        account_name=name,
        account_number=number,
        currency=currency,
        opening=opening,
        closing=closing,
        total_debit=debit,
        total_credit=credit,
        line_count=count,
        lines=lines(count, opening, descriptions=descriptions),
        aging=aging,
    )


def statement(*sections: Section, locale: str = "en_US") -> StatementData:
    return StatementData(
        reference="stm_7K2Q9XJ4",
        issuer="Billing Portal",
        company_name="Acme Industrial Supply",
        company_address="12 Harbour Road\nSpringfield, IL 62701",
        start=START,
        end=END,
        generated_at=datetime(2026, 4, 1, 8, 30, tzinfo=UTC),
        locale=locale,
        sections=sections,
    )
