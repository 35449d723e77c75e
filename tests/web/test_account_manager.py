"""Who to contact about a bill: the company's account manager in the footer of every signed-in
page and on the error pages (migration 0027), the plain sentence when signed out or when the
company has none; no query of its own, and no failure when the database is away."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import flags, tenancy
from portal.models import Company
from portal.services import invoices
from portal.templating import account_manager
from tests.conftest import Auth, QueryCounter, csrf_token
from tests.web.test_flags import assert_maintenance, switch
from tests.web.test_lost_connection import invalidated

PLAIN = "Questions about a bill? Contact your account manager."
NAMED = "Questions about a bill? Contact Morgan Reyes."
MAILTO = (
    '<a href="mailto:morgan.reyes@supplier.test">'
    '<bdi dir="ltr">morgan.reyes@supplier.test</bdi></a>'
)
TEL = '<a href="tel:+14155550123"><bdi dir="ltr">+1 415-555-0123</bdi></a>'
FRAGMENT = {"HX-Request": "true", "HX-Target": "invoice-results"}


def _footer(page: str) -> str:
    match = re.search(r'<footer class="site-footer">(.*?)</footer>', page, re.S)
    assert match, page
    return match.group(1)


def _company(db: Session, name: str) -> Company:
    with tenancy.system(db):
        return db.scalars(select(Company).where(Company.name == name)).one()


def test_the_seed_gives_acme_and_globex_a_manager_and_initech_none(db: Session) -> None:
    acme, globex, initech = (_company(db, n) for n in ("Acme Corp", "Globex GmbH", "Initech"))
    assert (acme.account_manager_name, acme.account_manager_email) == (
        "Morgan Reyes",
        "morgan.reyes@supplier.test",
    )
    assert acme.account_manager_phone == "+14155550123"
    assert globex.account_manager_phone == "+493012345678" and globex.account_manager_name
    assert initech.account_manager_name is None


@pytest.mark.parametrize("path", ["/portal/dashboard", "/portal/invoices", "/portal/profile"])
def test_every_signed_in_page_names_the_manager_with_mail_and_phone_links(
    signed_in: Auth, path: str
) -> None:
    page = signed_in.client.get(path).get_data(as_text=True)
    footer = _footer(page)
    assert NAMED in footer and MAILTO in footer and TEL in footer
    assert PLAIN not in footer


def test_in_arabic_the_address_and_number_stay_left_to_right(signed_in: Auth) -> None:
    client = signed_in.client
    token = csrf_token(client, "/portal/dashboard")
    client.post("/language", data={"csrf_token": token, "language": "ar", "next": "/"})
    page = client.get("/portal/dashboard").get_data(as_text=True)
    assert '<html lang="ar" dir="rtl">' in page
    footer = _footer(page)
    assert "Morgan Reyes" in footer and PLAIN not in footer
    assert "Contact Morgan" not in footer  # the sentence is Arabic
    assert MAILTO in footer and TEL in footer


@pytest.mark.parametrize("signed_in", ["admin@initech.test"], indirect=True)
def test_a_company_without_a_manager_keeps_the_plain_sentence(signed_in: Auth) -> None:
    footer = _footer(signed_in.client.get("/portal/dashboard").get_data(as_text=True))
    assert PLAIN in footer and "mailto:" not in footer and "tel:" not in footer


def test_a_manager_without_mail_or_phone_is_named_alone(signed_in: Auth, db: Session) -> None:
    with tenancy.system(db):
        acme = _company(db, "Acme Corp")
        acme.account_manager_email = acme.account_manager_phone = None
        db.flush()
    footer = _footer(signed_in.client.get("/portal/dashboard").get_data(as_text=True))
    assert NAMED in footer and "mailto:" not in footer and "tel:" not in footer


def test_signed_out_pages_keep_the_plain_sentence(client: FlaskClient) -> None:
    for path in ("/login", "/portal/nowhere"):
        footer = _footer(client.get(path).get_data(as_text=True))
        assert PLAIN in footer and "Morgan" not in footer


def test_a_404_names_the_manager_when_signed_in(client: FlaskClient, auth: Auth) -> None:
    signed_out = client.get("/portal/nowhere")
    assert signed_out.status_code == 404
    assert PLAIN in _footer(signed_out.get_data(as_text=True))
    auth.sign_in()
    response = client.get("/portal/invoices/inv_nope")
    assert response.status_code == 404
    assert NAMED in _footer(response.get_data(as_text=True))
    fragment = client.get("/portal/invoices/inv_nope", headers=FRAGMENT)
    body = fragment.get_data(as_text=True)
    assert fragment.status_code == 404 and "error-fragment" in body and "<footer" not in body
    assert NAMED in body and TEL in body


def test_a_500_after_a_failed_write_still_names_the_manager(
    client: FlaskClient, auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's transaction is unusable (PostgreSQL aborted it); the error page rolls it
    back and the company is read again with the user."""
    auth.sign_in()

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(invoices, "list_invoices", broken)
    response = client.get("/portal/invoices")
    assert response.status_code == 500
    assert NAMED in _footer(response.get_data(as_text=True))
    fragment = client.get("/portal/invoices", headers=FRAGMENT).get_data(as_text=True)
    assert "Something went wrong" in fragment and NAMED in fragment


def test_a_database_gone_mid_request_answers_without_the_manager(
    client: FlaskClient, auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.sign_in()

    def lost(*_args: object, **_kwargs: object) -> None:
        raise invalidated()

    monkeypatch.setattr(invoices, "list_invoices", lost)
    response = client.get("/portal/invoices?page=1")
    page = response.get_data(as_text=True)
    assert response.status_code == 503
    assert PLAIN in _footer(page) and "Morgan" not in page


def test_the_footer_renders_when_the_company_cannot_be_read(app: Flask) -> None:
    """The one read the footer could cause (the company's row, expired by a rollback) fails:
    no manager, no exception."""

    class Unreadable:
        @property
        def company(self) -> Any:
            raise invalidated()

    with app.test_request_context("/portal/dashboard"):
        g.user = Unreadable()
        assert account_manager() is None


def test_the_maintenance_page_is_generic(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    switch(db, flags.MASTER, False)
    text = assert_maintenance(client.get("/portal/dashboard"))
    assert PLAIN in _footer(text) and "Morgan" not in text
    switch(db, flags.MASTER, True)


def test_the_footer_costs_no_query(
    client: FlaskClient, auth: Auth, db: Session, count_queries: QueryCounter
) -> None:
    """The same page costs the same with a manager on record as without one."""
    auth.sign_in()
    counts = []
    for name in ("Morgan Reyes", None):
        with tenancy.system(db):
            acme = _company(db, "Acme Corp")
            acme.account_manager_name = name
            db.flush()
        db.expire_all()
        count_queries.statements.clear()
        page = client.get("/portal/dashboard").get_data(as_text=True)
        assert (NAMED in page) is (name is not None)
        counts.append(count_queries.count)
    assert counts[0] == counts[1], count_queries.statements
