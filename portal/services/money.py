"""Money is integer minor units plus an ISO 4217 code; Babel formats it for a locale."""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency, get_currency_precision


def to_decimal(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-get_currency_precision(currency))


def to_minor(amount: Decimal, currency: str) -> int:
    """Decimal major units to minor units; refuses fractions of the smallest unit."""
    scaled = amount.scaleb(get_currency_precision(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more decimals than {currency} allows")
    return int(scaled)


def format_money(minor: int, currency: str, locale: str) -> str:
    return format_currency(to_decimal(minor, currency), currency, locale=locale)
