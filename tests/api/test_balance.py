"""`GET /api/portal/balance/{currency}`: the page's "Pay balance" as JSON, the same invoices the
payment form preselects (`payments.balance_ids`), ready for `POST /api/portal/payment`."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.models import InvoiceStatus
from tests.api.conftest import PROBLEM, SpecCheck, issue_token
from tests.conftest import Auth
from tests.factories import account_named, make_invoice
from tests.web.test_pay_balance import HIDDEN, _expected


@pytest.mark.parametrize(
    ("email", "account"), [("admin@acme.test", None), ("ap@acme.test", "Acme West")]
)
def test_the_balance_lists_what_the_form_preselects(
    app: Flask,
    db: Session,
    client: FlaskClient,
    spec_check: SpecCheck,
    email: str,
    account: str | None,
) -> None:
    make_invoice(
        db, account_named(db, "Acme West"), "5.00", due=-900, status=InvoiceStatus.DISPUTED
    )
    token = issue_token(app, db, email)
    response = client.get("/api/portal/balance/USD", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = spec_check(response, "/api/portal/balance/{currency}")
    expected = _expected(db, "Acme Corp", "USD", account=account)
    assert [i["id"] for i in body["invoices"]] == expected
    assert body["found"] == len(expected) and body["currency"] == "USD"
    assert all(i["available"]["currency"] == "USD" for i in body["invoices"])


def test_the_same_invoices_as_the_page(
    app: Flask, db: Session, client: FlaskClient, auth: Auth
) -> None:
    token = issue_token(app, db)
    listed = client.get(
        "/api/portal/balance/usd", headers={"Authorization": f"Bearer {token}"}
    ).get_json()
    auth.sign_in()
    page = client.get("/portal/payment?balance=USD").get_data(as_text=True)
    assert [i["id"] for i in listed["invoices"]] == HIDDEN.findall(page)


def test_nothing_owed_in_a_currency_is_an_empty_list(
    app: Flask, db: Session, client: FlaskClient, spec_check: SpecCheck
) -> None:
    token = issue_token(app, db)
    for currency in ("XYZ", "€", "EURO"):
        response = client.get(
            f"/api/portal/balance/{currency}", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        assert spec_check(response, "/api/portal/balance/{currency}")["invoices"] == []


def test_without_a_token_401(client: FlaskClient) -> None:
    response = client.get("/api/portal/balance/USD")
    assert response.status_code == 401 and response.mimetype == PROBLEM
