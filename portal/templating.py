"""Jinja filters and globals shared by every template."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from babel import Locale
from babel.dates import format_date as babel_format_date
from babel.dates import format_datetime as babel_format_datetime
from babel.numbers import format_decimal as babel_format_decimal
from babel.numbers import format_percent as babel_format_percent
from babel.numbers import get_currency_precision
from babel.units import format_unit
from flask import Flask, current_app, g, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from jinja2 import pass_eval_context
from jinja2.nodes import EvalContext
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError

from portal import clock, flags, i18n
from portal.assets import static_url
from portal.extensions import db_session, settings
from portal.models import Invoice, PaymentMethod, PaymentMethodKind
from portal.services import downloads, notifications
from portal.services.downloads import FileKind
from portal.services.invoices import is_payable
from portal.services.money import format_money, to_decimal
from portal.services.profile import display_phone
from portal.web import is_htmx, wants_fragment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: str
    admin_only: bool = False
    # The other pages of its section: endpoints, or a blueprint's as "name." (the longest
    # claim wins, so "payments.new" can sit under Invoices while "payments." is Payment History).
    section: tuple[str, ...] = ()
    flag: str | None = None  # a rollout flag (portal/flags.py) that switches the page off


# Every page of the contract, in menu order. An entry shows once its page exists.
NAV = (
    NavItem("dashboard.index", _l("Dashboard"), section=("dashboard.",)),
    # An invoice, its dispute and paying it (the form and its confirm step) are reached from
    # the invoice list; a payment's own page (its progress, then its receipt) is a record of
    # Payment History.
    NavItem(
        "invoices.index",
        _l("Invoices"),
        section=("invoices.", "disputes.", "payments.new", "payments.create"),
    ),
    NavItem("payments.history", _l("Payment History"), section=("payments.",)),
    # A refused download link's page (a statement's or a document's) is under Statements.
    NavItem(
        "statements.index",
        _l("Statements"),
        section=("statements.", "downloads."),
        flag="m25_portal_statements",
    ),
    NavItem(
        "documents.index", _l("Documents"), section=("documents.",), flag="m25_portal_documents"
    ),
    NavItem("payment_methods.index", _l("Payment methods"), section=("payment_methods.",)),
    NavItem("autopay.index", _l("Automatic payments"), section=("autopay.",)),
    NavItem("users.index", _l("Users"), admin_only=True, section=("users.",)),
    NavItem("activity.index", _l("Activity"), admin_only=True, section=("activity.",)),
)
ACCOUNT_NAV = (
    NavItem("profile.show", _l("Profile"), section=("profile.",)),
    NavItem("notifications.show", _l("Notifications"), section=("notifications.",)),
    NavItem("security.show", _l("Security"), section=("security.",)),
)


def nav_section(endpoint: str | None) -> str | None:
    """The menu entry (its endpoint) whose section a page belongs to, if any."""
    if not endpoint:
        return None
    best, best_length = None, 0
    for item in NAV + ACCOUNT_NAV:
        for claim in (item.endpoint, *item.section):
            hit = endpoint == claim or (claim.endswith(".") and endpoint.startswith(claim))
            if hit and len(claim) > best_length:
                best, best_length = item.endpoint, len(claim)
    return best


def nav_mark(item: NavItem) -> str | None:
    """aria-current for a menu entry: "page" on its own page, "true" elsewhere in its section."""
    endpoint = request.endpoint
    if endpoint == item.endpoint:
        return "page"
    if nav_section(endpoint) == item.endpoint:
        return "true"
    return None


def _visible(items: tuple[NavItem, ...]) -> list[NavItem]:
    endpoints = current_app.view_functions
    user = g.get("user")
    return [
        item
        for item in items
        if item.endpoint in endpoints
        and (not item.admin_only or (user and user.is_admin))
        and (item.flag is None or flags.enabled(item.flag))
    ]


# Bidi isolation. In a right-to-left page an amount or a date that stands next to other text is
# reordered with it: "‏692.79 US$ · 30‏/11‏/2026" reads "2026/11/US$ · 30 692.79", and the "US$"
# of an amount on its own reads "$US". So every amount, number and date on a page is isolated,
# here and only here: the filters give HTML templates a <bdi> (amounts and numbers left to right,
# dates in the direction of the locale that wrote them); a sentence built in Python for a page (a
# field error, a flash) takes isolated_money()/isolated_date(), which use the Unicode isolates
# LRI/RLI … PDI. Everything else stays plain text: money() and format_date() for mail, where a
# template does not escape (mail text), and where markup cannot go (attributes, SVG text:
# `money_text`). PDFs and CSV are formatted by their services in plain text.
_ISOLATE_OPEN = {"ltr": "\u2066", "rtl": "\u2067"}
_ISOLATE_CLOSE = "\u2069"


def date_direction() -> str:
    """The direction a formatted date reads in: Arabic dates carry right-to-left marks."""
    return str(_date_locale().text_direction)


def _locale(code: str | None = None) -> Locale:
    """The Locale to format numbers in: `code` (a mail names its reader's) or else the
    request's (the profile's number format, else the language's)."""
    return i18n.locale_object(code or i18n.format_locale())


def _date_locale(code: str | None = None) -> Locale:
    """The Locale to format dates in: `code`, or else the request's language (never the
    profile's number format: month names are words)."""
    return i18n.locale_object(code or i18n.text_locale())


def _isolated(text: str, direction: str) -> str:
    return f"{_ISOLATE_OPEN[direction]}{text}{_ISOLATE_CLOSE}" if text else text


_BDI_OPEN = {"ltr": Markup('<bdi dir="ltr">'), "rtl": Markup('<bdi dir="rtl">')}
_BDI_CLOSE = Markup("</bdi>")


def _bdi(text: str, direction: str) -> Markup:
    # Markup + str escapes the text; half the time of Markup.format (a list page isolates a
    # hundred values).
    return _BDI_OPEN[direction] + text + _BDI_CLOSE if text else Markup()


def money(minor: int | None, currency: str, locale: str | None = None) -> str:
    """An amount as plain text (mail, attributes, SVG), in `locale` (a mail names its reader's)
    or else the request's (`i18n.format_locale`)."""
    return _formatted_money(minor or 0, currency, locale or i18n.format_locale())


# Formatting is a pure function of its arguments and Babel's rules: a page's amounts and dates
# (and the next request's, for the same invoices) are formatted once per process.
@lru_cache(maxsize=16_384)
def _formatted_money(minor: int, currency: str, code: str) -> str:
    return format_money(minor, currency, i18n.locale_object(code))


@lru_cache(maxsize=16_384)
def _formatted_date(value: date, fmt: str, code: str) -> str:
    return str(babel_format_date(value, format=fmt, locale=i18n.locale_object(code)))


def format_date(value: date | None, fmt: str = "medium", locale: str | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):  # a moment: its date where the reader is, not cached
        return babel_format_date(_local(value), format=fmt, locale=_date_locale(locale))
    return _formatted_date(value, fmt, locale or i18n.text_locale())


def format_datetime(value: datetime | None, fmt: str = "medium", locale: str | None = None) -> str:
    if value is None:
        return ""
    return babel_format_datetime(
        value, format=fmt, tzinfo=i18n.user_zone(), locale=_date_locale(locale)
    )


def _local(value: datetime) -> datetime:
    """A moment in the reader's time zone (the profile's, else UTC); stored moments are UTC."""
    return value.astimezone(i18n.user_zone()) if value.tzinfo is not None else value


def isolated_money(minor: int | None, currency: str) -> str:
    """An amount for a sentence built in Python and shown on a page."""
    return _isolated(money(minor, currency), "ltr")


def isolated_date(value: date | None, fmt: str = "medium") -> str:
    """A date for a sentence built in Python and shown on a page."""
    return _isolated(format_date(value, fmt), date_direction())


def _html_or_text(context: EvalContext, text: str, direction: str) -> str:
    return _bdi(text, direction) if context.autoescape else text


@pass_eval_context
def _money_filter(
    context: EvalContext, minor: int | None, currency: str, locale: str | None = None
) -> str:
    return _html_or_text(context, money(minor, currency, locale), "ltr")


@pass_eval_context
def _date_filter(context: EvalContext, value: date | None, fmt: str = "medium") -> str:
    return _html_or_text(context, format_date(value, fmt), date_direction())


@pass_eval_context
def _datetime_filter(
    context: EvalContext, value: datetime | None, fmt: str = "medium", locale: str | None = None
) -> str:
    return _html_or_text(context, format_datetime(value, fmt, locale), date_direction())


@pass_eval_context
def _number_filter(context: EvalContext, value: object) -> str:
    return _html_or_text(context, format_number(value), "ltr")


@pass_eval_context
def _phone_filter(context: EvalContext, e164: str | None) -> str:
    """A stored E.164 number as people write it ("+1 415-555-0123"), left to right."""
    return _html_or_text(context, display_phone(e164), "ltr")


@pass_eval_context
def _ltr_filter(context: EvalContext, text: str | None) -> str:
    """Text that reads left to right whatever the page (an e-mail address)."""
    return _html_or_text(context, text or "", "ltr")


@pass_eval_context
def _percent_filter(context: EvalContext, basis_points: int) -> str:
    return _html_or_text(context, format_percent(basis_points), "ltr")


# A status badge's words, for invoices and payments: text and colour, never colour alone.
STATUS_LABELS = {
    "open": _l("Open"),
    "overdue": _l("Overdue"),
    "partially_paid": _l("Partially paid"),
    "processing": _l("Processing"),
    "payment_failed": _l("Failed"),
    "disputed": _l("Disputed"),
    "paid": _l("Paid"),
    "void": _l("Void"),
    "succeeded": _l("Paid"),
    "failed": _l("Failed"),
    "pending": _l("Pending"),
    "scheduled": _l("Scheduled"),
    "canceled": _l("Canceled"),
}


def status_labels() -> dict[str, str]:
    """STATUS_LABELS in the request's language, translated once per request (a list of 25 rows
    used to look up all thirteen for every row's badge)."""
    language = str(get_locale())
    cached: tuple[str, dict[str, str]] | None = g.get("status_labels")
    if cached is None or cached[0] != language:
        cached = (language, {key: str(label) for key, label in STATUS_LABELS.items()})
        g.status_labels = cached
    return cached[1]


_ROW_VALUE = "ROWVALUE0"
_URL_SAFE = re.compile(r"[A-Za-z0-9_-]+\Z")


def row_url(endpoint: str, name: str) -> Callable[[str], str]:
    """url_for(endpoint, name=value) for each row of a list, the URL built once: a value of
    letters, digits, "_" and "-" (a public id) reads the same quoted or not, in a path or a
    query, so it goes in as it is; anything else goes through url_for."""
    marked: dict[str, Any] = {name: _ROW_VALUE}
    head, _marker, tail = url_for(endpoint, **marked).partition(_ROW_VALUE)

    def build(value: str) -> str:
        if _URL_SAFE.match(value):
            return f"{head}{value}{tail}"
        values: dict[str, Any] = {name: value}
        return url_for(endpoint, **values)

    return build


def unread_notifications() -> int:
    """The signed-in user's unread notifications (the header's badge): one indexed count, read
    once per request when first drawn, so a route that marks some read first shows the new
    count."""
    user = g.get("user")
    if user is None:
        return 0
    count: int | None = g.get("unread_notifications")
    if count is None:
        count = g.unread_notifications = notifications.unread_count(db_session(), user)
    return count


def endpoint_exists(endpoint: str) -> bool:
    return endpoint in current_app.view_functions


def payments_enabled() -> bool:
    return endpoint_exists("payments.new") and flags.enabled("m25_portal_payment")


def pay_url(invoice: Invoice) -> str | None:
    """Where "Pay Now" goes, once online payment exists and is switched on; else None."""
    if not payments_enabled():
        return None
    if not is_payable(invoice):
        return None
    return url_for("payments.new", invoice=invoice.public_id)


@dataclass(frozen=True)
class AccountManager:
    """Who the signed-in user's company asks about its bills (the footer, the error pages)."""

    name: str
    email: str | None
    phone: str | None  # E.164: the tel: link's; the page shows it with the `phone` filter


def account_manager() -> AccountManager | None:
    """The signed-in user's company's account manager, or None (signed out, none on record, or
    the database unreachable: the footer then says "your account manager"). The company is
    loaded with the user (services.auth), so this costs no query; if its row must be read
    again (a failed request rolled back) and cannot be, the page still renders."""
    user = g.get("user")
    if user is None:
        return None
    try:
        company = user.company
        name = company.account_manager_name
        email = company.account_manager_email
        phone = company.account_manager_phone
    except SQLAlchemyError:
        log.warning("account manager not read: the footer names none", exc_info=True)
        return None
    if not name:
        return None
    return AccountManager(name=name, email=email or None, phone=phone or None)


def documents_enabled() -> bool:
    return endpoint_exists("documents.index") and flags.enabled("m25_portal_documents")


def document_url(public_id: str) -> str | None:
    """A signed 24-hour download link to a document, made now for the signed-in user
    (services.downloads); None while the documents library is switched off."""
    user = g.get("user")
    if user is None or not documents_enabled():
        return None
    token = downloads.sign(
        FileKind.DOCUMENT, public_id, user.public_id, keys=settings().keyring, now=clock.now()
    )
    return url_for("downloads.fetch", token=token)


def dispute_attachment_url(public_id: str) -> str:
    """A signed 24-hour download link to a dispute's attachment, for the signed-in user."""
    user = g.get("user")
    assert user is not None
    token = downloads.sign(
        FileKind.DISPUTE_ATTACHMENT,
        public_id,
        user.public_id,
        keys=settings().keyring,
        now=clock.now(),
    )
    return url_for("downloads.fetch", token=token)


_SIZE_UNITS = ("digital-byte", "digital-kilobyte", "digital-megabyte", "digital-gigabyte")


def format_filesize(size: int) -> str:
    """A file's size as people read it, in the locale's words: "12.3 kB", "12,3 kB"."""
    value = Decimal(max(0, size))
    unit = 0
    while value >= 1024 and unit < len(_SIZE_UNITS) - 1:
        value /= 1024
        unit += 1
    pattern = "#,##0" if unit == 0 else "#,##0.#"
    return str(format_unit(value, _SIZE_UNITS[unit], "short", pattern, locale=_locale()))


@pass_eval_context
def _filesize_filter(context: EvalContext, size: int) -> str:
    return _html_or_text(context, format_filesize(size), date_direction())


def format_percent(basis_points: int) -> str:
    """8.25 % from 825 basis points, spaced and signed as the locale writes it."""
    return babel_format_percent(basis_points / 10000, format="#,##0.##%", locale=_locale())


def format_number(value: object) -> str:
    return babel_format_decimal(value, locale=_locale())  # type: ignore[arg-type]


def plain_amount(minor: int, currency: str) -> str:
    """An amount as typed into a field: no grouping, no symbol, the locale's decimal sign
    ("1234.50" in en, "1234,50" in de); the payment form reads it back the same way."""
    precision = get_currency_precision(currency)
    pattern = "0." + "0" * precision if precision else "0"
    return str(babel_format_decimal(to_decimal(minor, currency), format=pattern, locale=_locale()))


def method_name(method: PaymentMethod) -> str:
    """ "Visa ending 4242" or "Bank account ending 6789", for people and screen readers."""
    if method.kind is PaymentMethodKind.BANK_ACCOUNT:
        return str(_("Bank account ending %(last4)s", last4=method.last4))
    return str(_("%(brand)s ending %(last4)s", brand=method.brand.title(), last4=method.last4))


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(
        plain_amount=plain_amount,
        money=_money_filter,
        money_text=money,
        date=_date_filter,
        datetime=_datetime_filter,
        number=_number_filter,
        percent=_percent_filter,
        phone=_phone_filter,
        ltr=_ltr_filter,
        filesize=_filesize_filter,
    )
    app.jinja_env.globals.update(
        is_htmx=is_htmx,
        wants_fragment=wants_fragment,
        endpoint_exists=endpoint_exists,
        unread_notifications=unread_notifications,
        flag_enabled=flags.enabled,
        pay_url=pay_url,
        is_payable=is_payable,
        row_url=row_url,
        status_labels=status_labels,
        payments_enabled=payments_enabled,
        account_manager=account_manager,
        documents_enabled=documents_enabled,
        document_url=document_url,
        dispute_attachment_url=dispute_attachment_url,
        method_name=method_name,
        get_locale=get_locale,
        static_url=static_url,
        text_direction=i18n.text_direction,
        language_choices=i18n.language_choices,
        nav_items=lambda: _visible(NAV),
        account_nav_items=lambda: _visible(ACCOUNT_NAV),
        nav_mark=nav_mark,
        idle_seconds=lambda: current_app.config["SETTINGS"].session_idle_minutes * 60,
    )
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
