"""What a statement says, whatever its format: the one input of every renderer.

Amounts are integer minor units of the section's currency. A section is one billing account in
one currency; its lines are in date order and each carries the running balance after it, so
`opening + sum(debit) - sum(credit) == closing` and the last line's balance is `closing`.
Renderers read `lines` once, front to back (a section may hold thousands), report how many they
have written through `progress`, and never keep them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime


class LineKind(enum.StrEnum):
    INVOICE = "invoice"  # a debit: the invoice's total, on its issue date
    CREDIT_NOTE = "credit_note"  # a credit, on its issue date
    PAYMENT = "payment"  # a credit: a succeeded payment, on the day it was processed


@dataclass(frozen=True, slots=True)
class Line:
    day: date
    kind: LineKind
    reference: str  # "INV-1003", "CN-301", "PMT-7K2Q-9XJ4"
    description: str  # the invoice's PO or the payment method ("Visa ending 4242"); may be ""
    debit: int  # minor units; 0 unless an invoice
    credit: int  # minor units; 0 for an invoice
    balance: int  # the running balance after this line
    due: date | None = None  # an invoice's due date


@dataclass(frozen=True, slots=True)
class Aging:
    """What is still owed at the end date, by days past due on that date."""

    current: int = 0  # not yet due
    days_1_30: int = 0
    days_31_60: int = 0
    days_61_90: int = 0
    over_90: int = 0

    @property
    def total(self) -> int:
        return self.current + self.days_1_30 + self.days_31_60 + self.days_61_90 + self.over_90

    def buckets(self) -> tuple[int, int, int, int, int]:
        return (self.current, self.days_1_30, self.days_31_60, self.days_61_90, self.over_90)


@dataclass(frozen=True)
class Section:
    account_name: str
    account_number: str
    currency: str  # ISO 4217
    opening: int  # the balance at the start of the start date
    closing: int  # the balance at the end of the end date
    total_debit: int
    total_credit: int
    line_count: int
    lines: Iterable[Line]  # read once, in order
    aging: Aging


@dataclass(frozen=True)
class StatementData:
    reference: str  # the statement's public id
    issuer: str  # who the statement is from ("Billing Portal")
    company_name: str  # the customer
    company_address: str  # lines separated by "\n"; may be ""
    start: date
    end: date
    generated_at: datetime  # UTC
    locale: str  # "en_US", "de_DE", "ar", ...
    sections: Sequence[Section]

    @property
    def line_count(self) -> int:
        return sum(section.line_count for section in self.sections)


# Renderers call this with the number of lines written so far (every few hundred lines and at
# the end); the job turns it into the percentage on the statement row.
Progress = Callable[[int], None]


def no_progress(_done: int) -> None:
    """For callers that do not follow progress."""
