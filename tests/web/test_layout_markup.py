"""The markup behind the layout: isolated amounts and dates, the invoice list's filter summary
and selection bar (how they look is tested in Chromium, tests/browser/test_layout.py)."""

from __future__ import annotations

import json
import re
from datetime import date

from flask import Flask, render_template
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import Payment, PaymentStatus
from tests.conftest import Auth, user_by_email
from tests.web.payment_helpers import invoice, method, open_form, payment, submit

ARABIC = {"Accept-Language": "ar"}


def test_pages_isolate_each_amount_and_date(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in()
    page = client.get("/portal/dashboard", headers=ARABIC).get_data(as_text=True)
    # An amount reads left to right whatever the page's direction ("US$", not "$US")...
    assert re.search(
        r'data-figure="account-balance"><bdi dir="ltr">\u200f[\d,]+\.\d\d\xa0US\$</bdi>', page
    )
    # ...and an Arabic date right to left, as its marks say.
    assert re.search(r'<strong><bdi dir="rtl">\d\d\u200f/\d\d\u200f/\d{4}</bdi></strong>', page)
    assert re.search(
        r'activity-meta"><bdi dir="ltr">[^<]+</bdi> · <bdi dir="rtl">[^<]+</bdi></span>', page
    )
    # SVG text cannot hold HTML: the chart's figures stay plain (the stylesheet isolates them).
    assert re.search(r'<text class="bar-value"[^>]*>\u200f[\d,]+\.\d\d\xa0US\$</text>', page)
    assert not re.search(r"<(desc|text)[^>]*>[^<]*<bdi", page)


def test_text_that_is_not_html_keeps_plain_amounts_and_dates(app: Flask) -> None:
    source = "{{ 123456|money('USD') }} {{ day|date }} {{ 825|percent }} {{ 1234.5|number }}"
    with app.test_request_context(headers=ARABIC):
        html = app.jinja_env.from_string(source).render(day=date(2026, 11, 30))
        text = (
            app.jinja_env.overlay(autoescape=False)
            .from_string(source)
            .render(day=date(2026, 11, 30))
        )
    assert html == (
        '<bdi dir="ltr">\u200f1,234.56\xa0US$</bdi> <bdi dir="rtl">30\u200f/11\u200f/2026</bdi>'
        ' <bdi dir="ltr">8.25%</bdi> <bdi dir="ltr">1,234.5</bdi>'
    )
    assert text == "\u200f1,234.56\xa0US$ 30\u200f/11\u200f/2026 8.25% 1,234.5"
    assert not app.select_jinja_autoescape("mail/payment_succeeded.txt")


def test_mail_text_keeps_plain_amounts(app: Flask, db: Session) -> None:
    with tenancy.system(db):
        succeeded = db.scalars(
            select(Payment).where(Payment.status == PaymentStatus.SUCCEEDED).limit(1)
        ).one()
    found = payment(db, succeeded.public_id)
    user = user_by_email(db, "admin@acme.test")
    with app.test_request_context(headers=ARABIC), tenancy.system(db):
        text = render_template(
            "mail/payment_succeeded.txt", payment=found, user=user, amount="x", link="y"
        )
    amounts = re.findall(r"\u200f[\d,]+\.\d\d\xa0US\$", text)
    assert amounts and "<bdi" not in text and "\u2066" not in text


def test_a_sentence_built_in_python_isolates_its_amount(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in()
    inv = invoice(db, "INV-1003")
    _page, key, token = open_form(client, inv.public_id)
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "ar"
    response = submit(
        client,
        [inv],
        key=key,
        token=token,
        action="review",
        method_id=method(db, "4242").public_id,
        amounts={inv.public_id: "99999"},
    )
    error = re.search(r'id="amount-[\w-]+-error">([^<]+)<', response.get_data(as_text=True))
    assert response.status_code == 422 and error
    # Field errors are plain text, so the amount sits between Unicode isolates (LRI … PDI).
    assert re.search(r"\u2066\u200f[\d,]+\.\d\d\xa0US\$\u2069", error.group(1))


def _summary(page: str) -> str:
    found = re.search(r'<span id="filter-summary">(.*?)</span></summary>', page, re.S)
    assert found, "no filter summary"
    return re.sub(r"<[^>]+>", "", found.group(1))


def test_the_filter_summary_says_what_is_active(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in()
    page = client.get("/portal/invoices").get_data(as_text=True)
    assert _summary(page) == "Filters"
    assert '<details class="filter-panel">' in page  # folded on a phone
    page = client.get("/portal/invoices?status=overdue").get_data(as_text=True)
    assert _summary(page) == "Filters: Overdue"
    page = client.get("/portal/invoices?status=overdue&q=INV&sort=number").get_data(as_text=True)
    assert _summary(page) == "Filters: Overdue · 2 more"
    page = client.get("/portal/invoices?q=INV-10&from=2026-01-05").get_data(as_text=True)
    assert _summary(page) == "Filters: “INV-10” · 1 more"
    # A filter that needs correcting opens the panel, so its error shows.
    page = client.get("/portal/invoices?from=2026-02-01&to=2026-01-01").get_data(as_text=True)
    assert '<details class="filter-panel" open>' in page
    # The results fragment updates the summary out of band, like the count.
    fragment = client.get(
        "/portal/invoices?status=paid",
        headers={"HX-Request": "true", "HX-Target": "invoice-results"},
    ).get_data(as_text=True)
    assert re.search(
        r'<span data-hx-swap-oob="innerHTML:#filter-summary">Filters: Paid</span>', fragment
    )


def test_the_selection_bar_submits_without_javascript(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in()
    page = client.get("/portal/invoices").get_data(as_text=True)
    bar = re.search(r'<div class="selection-bar".*?</div>\s*</div>', page, re.S)
    assert bar, "no selection bar"
    markup = bar.group(0)
    # The count and Select all need JavaScript: hidden until portal.js fills them in.
    assert re.search(r'<p class="selection-count" role="status"[^>]* hidden>', markup)
    assert re.search(r"<button type=\"button\"[^>]*data-select-all[^>]* hidden>", markup)
    labels = json.loads(re.search(r"data-labels='([^']+)'", markup).group(1))  # type: ignore[union-attr]
    assert labels[0] == "0 selected" and labels[1] == "1 selected" and len(labels) == 24
    # The buttons are plain submit buttons of the list's GET form: checked rows go with them.
    assert 'type="submit" class="button button-primary" formaction="/portal/payment"' in markup
    assert 'aria-label="Pay selected"' in markup and 'aria-label="Download selected"' in markup
    assert '<form id="bulk" method="get" action="/portal/invoices/download"' in page
