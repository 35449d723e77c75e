"""Saved methods: added only through the gateway's hosted page, listed, removed, made default."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import PaymentMethod, PaymentMethodKind
from tests.conftest import Auth, csrf_token
from tests.web.payment_helpers import TOKEN, invoice, method, pay


def start_setup(client: FlaskClient, kind: str = "card", next_url: str = "") -> str:
    """Press "Add a card"; returns the hosted page's path."""
    token = csrf_token(client, "/portal/payment-methods")
    data = {"csrf_token": token, "kind": kind}
    if next_url:
        data["next"] = next_url
    response = client.post("/portal/payment-methods/new", data=data)
    assert response.status_code == 303
    location: str = response.headers["Location"]
    assert location.startswith("/sandbox/setup/sbs_")
    return location


def fill_card(client: FlaskClient, page: str, **fields: str) -> Any:
    form = client.get(page).get_data(as_text=True)
    assert "Sandbox payment gateway" in form and 'name="number"' in form
    token = TOKEN.search(form)
    assert token
    data = {"csrf_token": token.group(1), "expiry": "12/30", "cvc": "123", "name": "A Payer"}
    data.update(fields)
    return client.post(page, data=data)


def add_card(client: FlaskClient, number: str, next_url: str = "") -> Any:
    hosted = start_setup(client, "card", next_url)
    done = fill_card(client, hosted, number=number)
    assert done.status_code == 303, done.get_data(as_text=True)
    return client.get(done.headers["Location"])


def _methods(db: Session) -> list[PaymentMethod]:
    """Acme's methods, fresh from the database."""
    acme = method(db, "4242").company_id
    with tenancy.system(db):
        return list(
            db.scalars(
                select(PaymentMethod)
                .where(PaymentMethod.removed_at.is_(None), PaymentMethod.company_id == acme)
                .execution_options(populate_existing=True)
            )
        )


def test_the_list_shows_brand_last4_expiry_and_default(
    client: FlaskClient, signed_in: Auth
) -> None:
    page = client.get("/portal/payment-methods").get_data(as_text=True)
    assert "Visa ending 4242" in page and "Visa ending 0341" in page
    assert "expires 12/" in page and "Default" in page
    assert 'name="number"' not in page  # no card field of the portal's own


def test_adding_a_card_through_the_hosted_page(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    before = len(_methods(db))
    landed = add_card(client, "4242 4242 4242 4242")
    assert landed.status_code == 303 and landed.headers["Location"] == "/portal/payment-methods"
    page = client.get("/portal/payment-methods").get_data(as_text=True)
    assert "Payment method added." in page
    methods = _methods(db)
    assert len(methods) == before + 1
    new = max(methods, key=lambda m: m.id)
    assert (new.brand, new.last4, new.exp_month, new.exp_year) == ("visa", "4242", 12, 2030)
    assert (
        new.gateway_token.startswith("sandbox_pm_") and "4242424242424242" not in new.gateway_token
    )


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("4000 0000 0000 0002", "Your card was declined."),
        ("4000 0000 0000 9995", "Your card has insufficient funds."),
        ("4111 1111 1111 1111", "accepts only the test card numbers"),
    ],
)
def test_refused_cards_stay_on_the_hosted_page_and_are_not_echoed(
    client: FlaskClient, signed_in: Auth, db: Session, number: str, message: str
) -> None:
    before = len(_methods(db))
    hosted = start_setup(client)
    response = fill_card(client, hosted, number=number)
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and message in page
    assert 'name="number" value=""' in page  # what was typed is not sent back
    assert len(_methods(db)) == before


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"expiry": "13/30"}, "Enter the expiry as MM/YY."),
        ({"expiry": "01/20"}, "This card has expired."),
        ({"cvc": "12"}, "Enter the 3 or 4 digit security code."),
    ],
)
def test_hosted_page_checks_expiry_and_security_code(
    client: FlaskClient, signed_in: Auth, fields: dict[str, str], message: str
) -> None:
    hosted = start_setup(client)
    response = fill_card(client, hosted, number="4242424242424242", **fields)
    assert response.status_code == 422 and message in response.get_data(as_text=True)


def test_adding_a_bank_account(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    hosted = start_setup(client, "bank_account")
    form = client.get(hosted).get_data(as_text=True)
    token = TOKEN.search(form)
    assert token and "110000000" in form
    wrong = client.post(
        hosted, data={"csrf_token": token.group(1), "routing": "110000000", "account": "1"}
    )
    assert wrong.status_code == 422
    done = client.post(
        hosted,
        data={"csrf_token": token.group(1), "routing": "110000000", "account": "000123456789"},
    )
    assert done.status_code == 303
    client.get(done.headers["Location"])
    bank = [m for m in _methods(db) if m.kind is PaymentMethodKind.BANK_ACCOUNT]
    assert [(m.brand, m.last4) for m in bank] == [("bank", "6789")]
    assert "Bank account ending 6789" in client.get("/portal/payment-methods").get_data(
        as_text=True
    )


def test_a_hosted_page_is_used_once(client: FlaskClient, signed_in: Auth) -> None:
    hosted = start_setup(client)
    assert fill_card(client, hosted, number="4242424242424242").status_code == 303
    assert client.get(hosted).status_code == 404


def test_adding_from_the_payment_form_comes_back_with_it_chosen(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    inv = invoice(db, "INV-1004")
    back = f"/portal/payment?invoice={inv.public_id}"
    landed = add_card(client, "4242424242424242", next_url=back)
    location = landed.headers["Location"]
    assert location.startswith(back + "&method=pm_")
    page = client.get(location).get_data(as_text=True)
    chosen = re.search(r'value="(pm_[^"]+)" checked', page)
    assert chosen and chosen.group(1) == location.rsplit("=", 1)[1]


def test_set_default_and_remove(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    failing = method(db, "0341")
    token = csrf_token(client, "/portal/payment-methods")
    made = client.post(
        f"/portal/payment-methods/{failing.public_id}/default", data={"csrf_token": token}
    )
    assert made.status_code == 303
    defaults = [m.last4 for m in _methods(db) if m.is_default]
    assert defaults == ["0341"]
    removed = client.post(
        f"/portal/payment-methods/{failing.public_id}/remove", data={"csrf_token": token}
    )
    assert removed.status_code == 303
    left = _methods(db)
    assert "0341" not in [m.last4 for m in left]
    assert [m.last4 for m in left if m.is_default] == ["4242"]  # the default moves on


def test_a_method_paying_a_scheduled_payment_cannot_be_removed(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    visa = method(db, "4242")
    inv = invoice(db, "INV-1004")
    day = app.extensions["portal.clock"].today().toordinal() + 5
    from datetime import date

    when = date.fromordinal(day).isoformat()
    _response, _pid = pay(client, [inv], visa.public_id, scheduled_for=when)
    token = csrf_token(client, "/portal/payment-methods")
    refused = client.post(
        f"/portal/payment-methods/{visa.public_id}/remove", data={"csrf_token": token}
    )
    assert refused.status_code == 303
    page = client.get("/portal/payment-methods").get_data(as_text=True)
    assert "pays a scheduled payment on" in page
    assert "Visa ending 4242" in page


def test_a_restricted_user_cannot_remove_a_method_they_did_not_add(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in("ap@acme.test")
    visa = method(db, "4242")
    page = client.get("/portal/payment-methods").get_data(as_text=True)
    assert "Visa ending 4242" in page and f"/{visa.public_id}/remove" not in page
    token = csrf_token(client, "/portal/payment-methods")
    response = client.post(
        f"/portal/payment-methods/{visa.public_id}/remove", data={"csrf_token": token}
    )
    assert response.status_code == 403


def test_a_method_another_accounts_scheduled_payment_uses_cannot_be_removed(
    app: Flask, db: Session
) -> None:
    """ap@acme.test sees only Acme West; the admin schedules an Acme East payment with ap's
    card. ap must not be able to strand that payment by removing the card."""
    from datetime import timedelta

    from tests.conftest import Auth

    ap_client = app.test_client()
    Auth(app, ap_client).sign_in("ap@acme.test")
    add_card(ap_client, "4242424242424242")
    card = max(_methods(db), key=lambda m: m.id)
    admin_client = app.test_client()
    Auth(app, admin_client).sign_in("admin@acme.test")
    day = app.extensions["portal.clock"].today() + timedelta(days=3)
    _response, pid = pay(
        admin_client, [invoice(db, "INV-2003")], card.public_id, scheduled_for=day.isoformat()
    )
    assert pid
    token = csrf_token(ap_client, "/portal/payment-methods")
    ap_client.post(f"/portal/payment-methods/{card.public_id}/remove", data={"csrf_token": token})
    assert card.id in {m.id for m in _methods(db)}  # still there
    page = ap_client.get("/portal/payment-methods").get_data(as_text=True)
    assert "A payment an administrator scheduled uses this method." in page
    assert day.isoformat() not in page  # nothing about the payment ap may not see
