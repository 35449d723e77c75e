"""Locale selection and locale-aware formatting."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from flask import Flask, g, has_request_context, request, session
from flask_babel import get_locale

from portal.extensions import babel

SUPPORTED_LOCALES = ("en", "es", "de", "ar")
LANGUAGE_KEY = "lang"
RTL_LANGUAGES = frozenset({"ar", "he", "fa", "ur"})
# The number formats a profile may choose instead of its language's ("Follow language").
NUMBER_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "ar")


def language_of(locale: str | None) -> str:
    """The portal language a locale ("de_DE", "ar") reads in: its language when the portal speaks
    it, else the first (for mail and files made outside a request)."""
    language = (locale or "").split("_")[0].split("-")[0].lower()
    return language if language in SUPPORTED_LOCALES else SUPPORTED_LOCALES[0]


def select_locale() -> str:
    user = g.get("user")
    if user is not None and user.locale:
        language = str(user.locale).split("_")[0]
        if language in SUPPORTED_LOCALES:
            return language
    if not has_request_context():  # a job: the user's language, else English
        return SUPPORTED_LOCALES[0]
    chosen = session.get(LANGUAGE_KEY)
    if chosen in SUPPORTED_LOCALES:
        return str(chosen)
    best: str | None = request.accept_languages.best_match(SUPPORTED_LOCALES)
    return best or SUPPORTED_LOCALES[0]


def format_locale() -> str:
    """Where money and numbers are formatted: the profile's number format, else
    `text_locale()`."""
    user = g.get("user")
    if user is not None and user.number_locale in NUMBER_LOCALES:
        return str(user.number_locale)
    return text_locale()


def text_locale() -> str:
    """Where dates (month names, their order) and documents' words follow the reader: the
    profile's locale, else the browser's (when it asks for a language we speak), else the
    company's. The number format never reaches them."""
    user = g.get("user")
    if user is not None and user.locale:
        return str(user.locale)
    browser = _browser_locale()
    if browser is not None:
        return browser
    if user is not None:
        return str(user.company.locale)
    return str(get_locale() or "en")


def _browser_locale() -> str | None:
    """The first locale of Accept-Language in a language we speak: read once per request (a
    list page formats a hundred amounts and dates)."""
    if not has_request_context():
        return None
    if "browser_locale" not in g:
        g.browser_locale = _first_supported(request.accept_languages.values())
    found: str | None = g.browser_locale
    return found


def _first_supported(languages: Iterable[str]) -> str | None:
    for tag in languages:
        if tag.split("-")[0].lower() in SUPPORTED_LOCALES:
            try:
                return str(Locale.parse(tag, sep="-"))
            except (UnknownLocaleError, ValueError):
                continue
    return None


@lru_cache(maxsize=128)
def locale_object(code: str) -> Locale:
    """The Babel Locale of a locale code, parsed once per process: Locale.parse costs a few
    hundred microseconds, and formatters given a Locale skip it (the object is never changed)."""
    return Locale.parse(code)


@lru_cache(maxsize=64)
def zone(name: str | None) -> tzinfo:
    """The IANA zone called `name`, else UTC."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def select_timezone() -> str:
    """The zone dates and times are shown in: the signed-in user's, else UTC."""
    user = g.get("user") if has_request_context() else None
    name = getattr(user, "timezone", None)
    return str(name) if name and zone(name) is not UTC else "UTC"


def user_zone() -> tzinfo:
    return zone(select_timezone())


def language_choices() -> list[tuple[str, str]]:
    return [(code, language_name(code)) for code in SUPPORTED_LOCALES]


def text_direction() -> str:
    locale = get_locale()
    return "rtl" if locale is not None and locale.language in RTL_LANGUAGES else "ltr"


def language_name(code: str) -> str:
    try:
        return Locale.parse(code).get_display_name(code) or code
    except (UnknownLocaleError, ValueError):
        return code


def init_app(app: Flask) -> None:
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)
