"""Money is integer minor units plus an ISO 4217 code; Babel formats it for a locale.

`parse_amount` is the one reader of a typed amount (payments and disputes alike): a plain decimal
numeral as the locale writes it, finite, above no bound but `MAX_MINOR`, at most the currency's
decimals. Python's Decimal (and Babel) would also read "Infinity", "sNaN" and "1E+999999999";
none of them is an amount anybody types, and none fits a BIGINT.
"""

from __future__ import annotations

import enum
from decimal import Decimal

from babel import Locale
from babel.numbers import (
    NumberFormatError,
    format_currency,
    get_currency_precision,
    get_decimal_symbol,
    get_group_symbol,
    parse_decimal,
)

# The largest amount a payment or a dispute may name, in minor units: 999,999,999,999.99 in a
# two-decimal currency. Far beyond any invoice, and ten thousand times below what the database's
# BIGINT columns hold (2**63 - 1), so sums of many such amounts still fit.
MAX_MINOR = 99_999_999_999_999

# What people put around an amount that says nothing about its value.
_NOISE = ("$", "€", "£", "\u00a0", "\u202f", " ")


class AmountError(enum.StrEnum):
    INVALID = "amount_invalid"
    DECIMALS = "amount_decimals"
    NOT_POSITIVE = "amount_not_positive"
    TOO_LARGE = "amount_too_large"


class AmountRefused(ValueError):
    def __init__(self, error: AmountError, amount: Decimal) -> None:
        super().__init__(f"{amount}: {error.value}")
        self.error = error


def to_decimal(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-get_currency_precision(currency))


def max_amount(currency: str) -> Decimal:
    """`MAX_MINOR` in major units of `currency`."""
    return to_decimal(MAX_MINOR, currency)


def to_minor(amount: Decimal, currency: str) -> int:
    """Decimal major units to minor units, exactly. Raises AmountRefused (a ValueError) for
    what is not finite, beyond MAX_MINOR either way, or finer than the currency's smallest unit.
    No step rounds: Decimal's context (28 digits) would quietly round a long number."""
    if not amount.is_finite():
        raise AmountRefused(AmountError.INVALID, amount)
    if abs(amount) > max_amount(currency):  # comparisons are exact; checked before any scaling
        raise AmountRefused(AmountError.TOO_LARGE, amount)
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite
    shift = exponent + get_currency_precision(currency)
    if shift < 0:  # digits below the smallest unit: allowed only as trailing zeros
        digits, dropped = digits[:shift], digits[shift:]
        if any(dropped):
            raise AmountRefused(AmountError.DECIMALS, amount)
        shift = 0
    # Bounded above, so at most a handful of digits are left (Decimal drops leading zeros).
    scale: int = 10**shift
    minor = int("".join(map(str, digits)) or "0") * scale
    return -minor if sign else minor


def parse_amount(raw: str, currency: str, locale: str = "en") -> int | AmountError:
    """A typed amount in major units to minor units, read as `locale` writes numbers
    ("1,234.50" in en, "1.234,50" in de); a plain "1234.50" is read everywhere. 0 is returned
    as 0 (for the payment form, "not this invoice"); the caller decides whether that is allowed.
    """
    cleaned = raw.strip()
    for noise in (*_NOISE, currency):
        cleaned = cleaned.replace(noise, "")
    negative = cleaned.startswith("-")
    digits = cleaned.lstrip("-")
    # Digits (in any script) and separators only: no exponent, no "Infinity"/"NaN", no "_".
    separators = {".", ",", get_decimal_symbol(locale), get_group_symbol(locale)}
    if not any(c.isdecimal() for c in digits) or not all(
        c.isdecimal() or c in separators for c in digits
    ):
        return AmountError.INVALID
    try:
        value = parse_decimal(digits, locale=locale, strict=True)
    except (NumberFormatError, ValueError, ArithmeticError):  # strict mode re-formats it
        if not _plain(digits):
            return AmountError.INVALID
        value = Decimal(digits)
    if negative:
        return AmountError.NOT_POSITIVE
    try:
        return to_minor(value, currency)
    except AmountRefused as refused:
        return refused.error


def _plain(digits: str) -> bool:
    """ "1234.50": digits, then at most one point and more digits."""
    whole, point, fraction = digits.partition(".")
    return whole.isdecimal() and (not point or fraction.isdecimal())


def format_money(minor: int, currency: str, locale: str | Locale) -> str:
    return format_currency(to_decimal(minor, currency), currency, locale=locale)
