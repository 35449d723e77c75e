"""Payment History's filters work like the invoice list's: a GET form htmx applies as you choose,
one URL answering the results fragment to htmx and the whole page to everyone else."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import BillingAccount
from tests.conftest import Auth, readable, user_by_email
from tests.factories import company_named, make_invoice, make_payment

HTMX = {"HX-Request": "true", "HX-Target": "payment-results"}


def _rows(page: str) -> list[str]:
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in page else ""
    return re.findall(r'class="badge badge-(\w+)"', body)


def test_the_form_applies_each_choice_and_pushes_the_url(
    client: FlaskClient, signed_in: Auth
) -> None:
    page = client.get("/portal/payment-history").get_data(as_text=True)
    form = page.split('<form class="filters card"', 1)[1].split(">", 1)[0]
    assert 'method="get"' in form and 'action="/portal/payment-history"' in form
    assert 'data-hx-get="/portal/payment-history"' in form
    assert 'data-hx-target="#payment-results"' in form and 'data-hx-push-url="true"' in form
    for control in ("status", "from", "to"):
        assert f"change from:#{control}" in form
    assert '<p id="result-count" class="result-count" role="status" aria-live="polite">' in page
    assert '<div id="payment-results" class="results">' in page
    assert ">Apply filters</button>" in page  # without JavaScript: one submit


def test_htmx_gets_the_results_with_the_count_and_export_link_out_of_band(
    client: FlaskClient, signed_in: Auth
) -> None:
    full = client.get("/portal/payment-history?status=failed")
    response = client.get("/portal/payment-history?status=failed", headers=HTMX)
    fragment = response.get_data(as_text=True)
    assert "<html" not in fragment and '<form class="filters' not in fragment
    statuses = _rows(fragment)
    assert statuses and set(statuses) == {"failed"}
    assert statuses == _rows(full.get_data(as_text=True))  # the same rows either way
    count = len(statuses)
    assert (
        f'<span data-hx-swap-oob="innerHTML:#result-count">{count} payments</span>' in fragment
        or f'<span data-hx-swap-oob="innerHTML:#result-count">{count} payment</span>' in fragment
    )
    assert re.search(
        r'<a id="history-csv" [^>]*href="/portal/payment-history.csv\?status=failed"[^>]*'
        r'data-hx-swap-oob="true"',
        fragment,
    )
    for answer in (full, response):
        assert "HX-Request" in answer.headers["Vary"]


@pytest.mark.parametrize("extra", [{"HX-History-Restore-Request": "true"}, {"HX-Boosted": "true"}])
def test_back_and_boosted_visits_get_the_whole_page(
    client: FlaskClient, signed_in: Auth, extra: dict[str, str]
) -> None:
    page = client.get("/portal/payment-history?status=succeeded", headers={**HTMX, **extra})
    text = page.get_data(as_text=True)
    assert text.lstrip().lower().startswith("<!doctype html>")
    assert '<option value="succeeded" selected>' in text  # the filters as chosen
    assert set(_rows(text)) == {"succeeded"}


def test_a_filter_that_finds_nothing_offers_to_clear_it(
    client: FlaskClient, signed_in: Auth
) -> None:
    fragment = client.get("/portal/payment-history?from=2099-01-01", headers=HTMX).get_data(
        as_text=True
    )
    assert "No payments match these filters" in fragment
    assert '<a class="button" href="/portal/payment-history">Clear filters</a>' in fragment
    assert "0 payments" in fragment


def test_a_company_without_payments_is_told_so_plainly(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in("admin@initech.test")
    page = client.get("/portal/payment-history").get_data(as_text=True)
    assert "No payments yet." in page and "No payments match these filters" not in page


@pytest.mark.parametrize("signed_in", ["admin@initech.test"], indirect=True)
def test_dates_filter_by_the_days_of_the_viewers_time_zone(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    initech = company_named(db, "Initech")
    with tenancy.system(db):
        account = db.scalars(
            select(BillingAccount).where(BillingAccount.company_id == initech.id)
        ).first()
        assert account is not None
    invoice = make_invoice(db, account, "50.00")
    make_payment(db, invoice, when=datetime(2026, 6, 1, 23, 30, tzinfo=UTC))
    with tenancy.system(db):
        user_by_email(db, "admin@initech.test").timezone = "Europe/Berlin"
    db.commit()
    page = client.get("/portal/payment-history").get_data(as_text=True)
    assert "Jun 2, 2026" in readable(page)  # 01:30 on 2 June in Berlin
    the_2nd = client.get("/portal/payment-history?from=2026-06-02&to=2026-06-02")
    assert _rows(the_2nd.get_data(as_text=True)) == ["succeeded"]
    the_1st = client.get("/portal/payment-history?from=2026-06-01&to=2026-06-01")
    assert _rows(the_1st.get_data(as_text=True)) == []
