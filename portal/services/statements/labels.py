"""What every statement format calls things, in the language of the render, and the plain
decimal form of an amount.

Labels are in the statement's language (its `locale`), read from the portal's catalogs with
Babel directly: the domain knows no Flask, and a render needs no app context. A language without
a catalog gets English. Messages new with statements carry the context "statement" (msgctxt)
so they never collide with the portal's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.numbers import get_currency_precision
from babel.support import NullTranslations, Translations

from portal.services.money import to_decimal
from portal.services.statements.data import Aging, LineKind, StatementData

TRANSLATIONS = Path(__file__).resolve().parents[3] / "translations"


@lru_cache(maxsize=16)
def catalog(locale: str) -> NullTranslations:
    """The catalog of `locale`'s language ("de_DE" reads de), or none (English)."""
    try:
        language = Locale.parse(locale.replace("-", "_")).language
    except (ValueError, UnknownLocaleError):
        return NullTranslations()
    return Translations.load(str(TRANSLATIONS), [language])


@dataclass(frozen=True)
class Labels:
    title: str
    reference: str
    issuer: str
    customer: str
    period: str
    generated: str
    account: str
    account_number: str
    currency: str
    opening: str
    closing: str
    totals: str
    date: str
    type: str
    line_reference: str
    description: str
    debit: str
    credit: str
    balance: str
    aging: str
    buckets: tuple[str, str, str, str, str]
    total: str
    summary: str
    kinds: dict[LineKind, str]

    @property
    def columns(self) -> tuple[str, str, str, str, str, str, str]:
        """The lines table's headings, in reading order."""
        return (
            self.date,
            self.type,
            self.line_reference,
            self.description,
            self.debit,
            self.credit,
            self.balance,
        )


def labels(locale: str) -> Labels:
    """The labels in `locale`'s language."""
    translations = catalog(locale)

    def _(message: str) -> str:
        return str(translations.gettext(message))

    def pgettext(context: str, message: str) -> str:
        return str(translations.pgettext(context, message))

    return Labels(
        title=pgettext("statement", "Statement of account"),
        reference=pgettext("statement", "Statement reference"),
        issuer=_("From"),
        customer=pgettext("statement", "Customer"),
        period=pgettext("statement", "Period"),
        generated=pgettext("statement", "Generated"),
        account=pgettext("statement", "Account"),
        account_number=_("Account number"),
        currency=pgettext("statement", "Currency"),
        opening=pgettext("statement", "Opening balance"),
        closing=pgettext("statement", "Closing balance"),
        totals=pgettext("statement", "Totals"),
        date=_("Date"),
        type=pgettext("statement", "Type"),
        line_reference=_("Reference"),
        description=_("Description"),
        debit=pgettext("statement", "Charges"),
        credit=pgettext("statement", "Payments and credits"),
        balance=_("Balance"),
        aging=_("Aging"),
        buckets=(
            _("Current"),
            _("1–30 days"),  # noqa: RUF001 - the catalog's en dash
            _("31–60 days"),  # noqa: RUF001
            _("61–90 days"),  # noqa: RUF001
            _("90+ days"),
        ),
        total=_("Total"),
        summary=pgettext("statement", "Summary"),
        kinds={
            LineKind.INVOICE: pgettext("statement", "Invoice"),
            LineKind.CREDIT_NOTE: pgettext("statement", "Credit note"),
            LineKind.PAYMENT: pgettext("statement", "Payment"),
        },
    )


def page_of(locale: str, page: int, pages: int) -> str:
    pgettext = catalog(locale).pgettext
    text = str(pgettext("statement", "Page %(page)s of %(pages)s"))
    return text % {"page": page, "pages": pages}


def period(locale: str, start: str, end: str) -> str:
    pgettext = catalog(locale).pgettext
    text = str(pgettext("statement", "%(start)s – %(end)s"))  # noqa: RUF001
    return text % {"start": start, "end": end}


def is_rtl(data: StatementData) -> bool:
    return data.locale.lower().startswith("ar")


def aging_values(aging: Aging) -> tuple[int, int, int, int, int, int]:
    """The five buckets and their total."""
    return (*aging.buckets(), aging.total)


def decimal(minor: int, currency: str) -> Decimal:
    """Minor units as a Decimal in major units with the currency's decimals: 1234.50."""
    return to_decimal(minor, currency)


def plain(minor: int, currency: str) -> str:
    """ "1234.50": digits and a point, the currency's decimals, never an exponent."""
    return format(to_decimal(minor, currency), "f")


def precision(currency: str) -> int:
    return int(get_currency_precision(currency))
