"""The list pages' per-row shortcuts (portal/templating.py, portal/i18n.py) give what the slow
way gave: row_url() the URLs of url_for, status_labels() the request's words, the cached
Locale the same formatting."""

from __future__ import annotations

import re
from datetime import date
from types import SimpleNamespace

import pytest
from flask import Flask, g, url_for
from flask_babel import force_locale

from portal import i18n, templating


@pytest.mark.parametrize(
    ("endpoint", "name", "value"),
    [
        ("invoices.show", "public_id", "inv_Abc-123"),
        ("invoices.pdf", "public_id", "inv_x"),
        ("payments.new", "invoice", "inv_Abc-123"),
        # Not a public id's letters: quoted by url_for itself.
        ("invoices.show", "public_id", "a b/ü?&"),
        ("payments.new", "invoice", "a b&c=ü"),
    ],
)
def test_row_url_is_url_for(app: Flask, endpoint: str, name: str, value: str) -> None:
    with app.test_request_context("/portal/invoices"):
        assert templating.row_url(endpoint, name)(value) == url_for(endpoint, **{name: value})


def test_status_labels_follow_the_language(app: Flask) -> None:
    with app.test_request_context("/portal/invoices"):
        with force_locale("de"):
            german = dict(templating.status_labels())
        english = templating.status_labels()
        assert english["partially_paid"] == "Partially paid"
        assert english["succeeded"] == english["paid"] == "Paid"
        assert german["paid"] != "Paid"
        assert set(german) == set(english) == set(templating.STATUS_LABELS)


def test_browser_locale_is_read_once_per_request(app: Flask) -> None:
    with app.test_request_context(headers={"Accept-Language": "fr-FR, de-DE;q=0.8"}):
        assert i18n.format_locale() == "de_DE"
        assert g.browser_locale == "de_DE"
        assert templating.format_date(date(2026, 3, 1)) == "01.03.2026"
    with app.test_request_context(headers={"Accept-Language": "fr-FR, xx-??"}):
        assert i18n._browser_locale() is None
    assert i18n.locale_object("de_DE") is i18n.locale_object("de_DE")


@pytest.mark.parametrize(
    ("current", "pages"), [(1, 2), (1, 9), (5, 9), (4, 800), (400, 800), (800, 800)]
)
def test_pagination_writes_the_same_numbers_without_looping_over_every_page(
    app: Flask, current: int, pages: int
) -> None:
    """Every page number it writes, in order, with "…" three away from the current page: what
    a loop over all the pages wrote (it now loops over those nine at most)."""
    expected: list[str] = []
    for number in range(1, pages + 1):
        if number == 1 or number == pages or abs(number - current) <= 2:
            expected.append(str(number))
        elif abs(number - current) == 3:
            expected.append("…")
    page = SimpleNamespace(page=current, pages=pages)
    with app.test_request_context("/portal/invoices"):
        macro = app.jinja_env.get_template("macros/ui.html").module.pagination  # type: ignore[attr-defined]
        html = str(macro(page, "invoices.index", "Pages", {}))
    written = re.findall(r"<li[^>]*>(?:<a[^>]*>)?([^<]+)", html)
    assert [w for w in written if w not in ("Previous", "Next")] == expected
