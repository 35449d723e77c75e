"""The one rule for a card about to expire (portal/services/payment_methods.is_expiring): its
expiry month ends within 60 days of today, or has ended; bank debits never."""

from __future__ import annotations

import calendar
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.models import PaymentMethod, PaymentMethodKind
from portal.services import payment_methods
from portal.services.payment_methods import EXPIRY_NOTICE, expires_on, is_expiring


def card(
    month: int | None, year: int | None, kind: PaymentMethodKind = PaymentMethodKind.CARD
) -> PaymentMethod:
    return PaymentMethod(kind=kind, brand="visa", last4="4242", exp_month=month, exp_year=year)


@pytest.mark.parametrize(
    ("month", "year", "today", "expected"),
    [
        (1, 2027, date(2026, 12, 2), True),  # 60 days to the month's end (2027-01-31)
        (1, 2027, date(2026, 12, 1), False),  # 61 days
        (2, 2028, date(2027, 12, 31), True),  # leap February ends on the 29th: 60 days
        (2, 2028, date(2027, 12, 30), False),  # 61 days
        (2, 2027, date(2026, 12, 30), True),  # an ordinary February ends on the 28th: 60 days
        (2, 2027, date(2026, 12, 29), False),
        (12, 2026, date(2026, 12, 31), True),  # its last day
        (11, 2026, date(2026, 12, 1), True),  # ended: expired counts
        (12, 2030, date(2026, 12, 1), False),
    ],
)
def test_boundaries(month: int, year: int, today: date, expected: bool) -> None:
    assert is_expiring(card(month, year), today) is expected


def test_the_sixty_days_are_counted_to_the_months_last_day() -> None:
    assert expires_on(card(1, 2027)) == date(2027, 1, 31)
    assert expires_on(card(2, 2028)) == date(2028, 2, 29)
    assert expires_on(card(2, 2100)) == date(2100, 2, 28)  # not a leap year
    today = date(2027, 1, 31) - EXPIRY_NOTICE
    assert is_expiring(card(1, 2027), today)
    assert not is_expiring(card(1, 2027), today - timedelta(days=1))


def test_bank_debits_and_methods_without_an_expiry_never_expire() -> None:
    assert not is_expiring(card(1, 2020, PaymentMethodKind.BANK_ACCOUNT), date(2026, 12, 1))
    assert not is_expiring(card(None, None), date(2026, 12, 1))
    assert not is_expiring(card(13, 2027), date(2026, 12, 1))  # nonsense is no expiry


@given(
    today=st.dates(min_value=date(2000, 1, 1), max_value=date(2200, 12, 31)),
    month=st.integers(1, 12),
    year=st.integers(1999, 2201),
)
def test_any_date_agrees_with_the_definition(today: date, month: int, year: int) -> None:
    end = date(year, month, calendar.monthrange(year, month)[1])
    assert is_expiring(card(month, year), today) is ((end - today).days <= 60)
    # The SQL bound the dashboard's one query uses holds exactly the same months.
    in_sql = year * 12 + month <= payment_methods._latest_expiring_month(today)
    assert in_sql is is_expiring(card(month, year), today)


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2200, 12, 31)))
def test_a_card_once_expiring_stays_so(today: date) -> None:
    """Monotone: what is expiring today is expiring tomorrow."""
    for month in range(1, 13):
        method = card(month, today.year)
        if is_expiring(method, today):
            assert is_expiring(method, today + timedelta(days=1))
