"""The dashboard's figures, the layout every page shares, errors and headers."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import OUTSTANDING, Company, Invoice
from portal.services.money import format_money
from tests.conftest import Auth, Backend, QueryCounter, make_app, scoped_session


def _figure(page: str, name: str) -> str:
    match = re.search(rf'data-figure="{name}"><bdi dir="ltr">([^<]+)</bdi><', page)
    assert match, f"no {name} on the page"
    return match.group(1)


def _expected(db: Session, company_name: str, account: str | None = None) -> tuple[int, int, int]:
    """Balance, credit limit and available credit, computed here from the raw rows."""
    with tenancy.system(db):
        company = db.scalars(select(Company).where(Company.name == company_name)).one()
        invoices = [
            i
            for i in db.scalars(select(Invoice).where(Invoice.company_id == company.id))
            if i.status in OUTSTANDING and i.currency == company.currency
        ]
        exposure = sum(i.balance_due for i in invoices)
        mine = sum(
            i.balance_due for i in invoices if account is None or i.billing_account.name == account
        )
        return mine, company.credit_limit, max(0, company.credit_limit - exposure)


@pytest.mark.parametrize(
    ("email", "company", "account", "locale", "currency"),
    [
        ("admin@acme.test", "Acme Corp", None, "en_US", "USD"),
        ("ap@acme.test", "Acme Corp", "Acme West", "en_US", "USD"),
        ("admin@globex.test", "Globex GmbH", None, "de_DE", "EUR"),
    ],
)
def test_dashboard_figures(
    client: FlaskClient,
    auth: Auth,
    db: Session,
    email: str,
    company: str,
    account: str | None,
    locale: str,
    currency: str,
) -> None:
    auth.sign_in(email)
    page = client.get("/portal/dashboard").get_data(as_text=True)
    assert f"<h1>Welcome, {company}</h1>" in page
    balance, limit, available = _expected(db, company, account)
    assert balance > 0 and available < limit
    assert _figure(page, "account-balance") == format_money(balance, currency, locale)
    assert _figure(page, "credit-limit") == format_money(limit, currency, locale)
    assert _figure(page, "available-credit") == format_money(available, currency, locale)


def test_empty_company_sees_the_empty_state(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in("admin@initech.test")
    page = client.get("/portal/dashboard").get_data(as_text=True)
    assert "No open invoices" in page and "You're all caught up! No outstanding invoices." in page
    assert _figure(page, "account-balance") == "$0.00"


def test_dashboard_query_count_is_bounded(
    client: FlaskClient, auth: Auth, count_queries: QueryCounter
) -> None:
    auth.sign_in()
    count_queries.statements.clear()
    assert client.get("/portal/dashboard").status_code == 200
    # session lookup, company, balances, counts, aging, latest invoices, latest payments, the
    # header's unread notifications (one indexed count on every signed-in page), and the cards
    # about to expire the user may manage (one query on the company's methods, by company_id)
    assert count_queries.count <= 10, count_queries.statements


def test_layout_landmarks_and_navigation(app: Flask, client: FlaskClient, auth: Auth) -> None:
    auth.sign_in()
    page = client.get("/portal/dashboard").get_data(as_text=True)
    assert '<a class="skip-link" href="#main">' in page
    assert '<main id="main"' in page and "<header" in page and "<footer" in page
    assert '<nav class="site-nav" aria-label="Main">' in page
    assert 'href="/portal/dashboard" aria-current="page"' in page
    assert '<html lang="en" dir="ltr">' in page
    htmx = app.extensions["portal.assets"].names["js/htmx.min.js"]
    assert f'src="/static/{htmx}"' in page


def test_portal_root_redirects_to_the_dashboard(client: FlaskClient) -> None:
    assert client.get("/portal").headers["Location"] == "/portal/dashboard"


def test_not_found_page_in_the_runbooks_words(client: FlaskClient) -> None:
    response = client.get("/portal/nowhere")
    assert response.status_code == 404
    assert "Not found" in response.get_data(as_text=True)


def test_server_error_page_offers_retry_and_hides_the_trace(backend: Backend) -> None:
    fresh = make_app(backend)

    @fresh.get("/__boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    response = fresh.test_client().get("/__boom")
    fresh.extensions["portal.db"].engine.dispose()
    page = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Something went wrong" in page and ">Retry</a>" in page
    assert "secret internals" not in page and "Traceback" not in page


def _every_page(client: FlaskClient) -> list[str]:
    app = client.application
    rules = [
        r.rule
        for r in app.url_map.iter_rules()
        if "GET" in (r.methods or ()) and not r.arguments and r.endpoint != "static"
    ]
    return [*rules, "/portal/nowhere", "/password/reset/x"]


def test_security_headers_on_every_page(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in()
    for path in _every_page(client):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert "Permissions-Policy" in headers
        assert "HX-Request" in headers["Vary"]


def test_no_inline_scripts_or_styles(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in()
    for path in ("/login", "/portal/dashboard"):
        page = client.get(path).get_data(as_text=True)
        assert "<style" not in page and " style=" not in page
        assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", page))


def test_aging_buckets_add_up_to_the_balance(
    client: FlaskClient, auth: Auth, db: Session, backend: Backend
) -> None:
    from portal.services.dashboard import aging

    auth.sign_in()
    page = client.get("/portal/dashboard").get_data(as_text=True)
    session = scoped_session(client.application, "admin@acme.test")
    buckets = {b.key: b for b in aging(session, backend.today)}
    session.close()
    balance, _, _ = _expected(db, "Acme Corp")
    assert sum(b.amount for b in buckets.values()) == balance
    with tenancy.system(db):
        late = [
            i
            for i in db.scalars(select(Invoice).where(Invoice.number.like("INV-%")))
            if i.status in OUTSTANDING
            and i.balance_due > 0
            and (backend.today - i.due_date).days > 90
        ]
    assert buckets["90+"].count == len(late) and buckets["90+"].amount == sum(
        i.balance_due for i in late
    )
    assert 'role="img"' in page and '<title id="aging-svg-title">' in page
    assert format_money(buckets["current"].amount, "USD", "en_US") in page


def _region(page: str, section_id: str) -> str:
    """The HTML of the <section> whose heading has `section_id` (aria-labelledby)."""
    start = page.index(f'aria-labelledby="{section_id}"')
    return page[start : page.index("</section>", start)]


def test_a_restricted_users_dashboard_keeps_each_figure_in_one_scope(
    client: FlaskClient, auth: Auth, db: Session, backend: Backend
) -> None:
    """ap@acme.test sees Acme West: its balance, counts and aging; the company's credit only in
    a region of its own that says it counts every account."""
    auth.sign_in("ap@acme.test")
    page = client.get("/portal/dashboard").get_data(as_text=True)
    assert '<p class="muted scope-note" id="page-scope">Showing billing account Acme West</p>' in (
        page
    )
    balance = _region(page, "balance-title")
    assert 'data-figure="account-balance"' in balance
    assert 'data-figure="credit-limit"' not in balance
    assert 'data-figure="available-credit"' not in balance
    credit = _region(page, "credit-title")
    assert "Credit of Acme Corp" in credit and "all its billing accounts" in credit
    _balance, limit, available = _expected(db, "Acme Corp")  # company-wide, said so
    assert _figure(credit, "credit-limit") == format_money(limit, "USD", "en_US")
    assert _figure(credit, "available-credit") == format_money(available, "USD", "en_US")
    # What is owed is West's alone, everywhere else on the page.
    west, _limit, _available = _expected(db, "Acme Corp", "Acme West")
    assert _figure(balance, "account-balance") == format_money(west, "USD", "en_US")
    session = scoped_session(client.application, "ap@acme.test")
    from portal.services.dashboard import aging

    assert sum(b.amount for b in aging(session, backend.today)) == west
    session.close()
    assert "INV-2" not in page  # no East invoice in the recent activity


def test_a_company_wide_dashboard_says_so_and_keeps_credit_with_the_balance(
    client: FlaskClient, auth: Auth
) -> None:
    auth.sign_in()
    page = client.get("/portal/dashboard").get_data(as_text=True)
    assert "Showing all billing accounts" in page
    balance = _region(page, "balance-title")
    assert all(
        f'data-figure="{name}"' in balance
        for name in ("account-balance", "credit-limit", "available-credit")
    )
    assert 'id="credit-title"' not in page


def test_payment_history_says_its_scope(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in("ap@acme.test")
    page = client.get("/portal/payment-history").get_data(as_text=True)
    assert "Showing billing account Acme West" in page and "Acme East" not in page
