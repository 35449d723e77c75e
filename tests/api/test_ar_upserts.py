"""The operator API's upserts (`/api/ar/companies`, `/billing-accounts`, `/users`, `/invoices`,
`/credit-notes`): operator keys only, all or nothing, every refused record named."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import clock, tenancy
from portal.models import Company, Invoice
from portal.services import api_tokens
from tests.api.conftest import PROBLEM, SpecCheck, issue_token
from tests.conftest import Auth

TODAY = clock.today().isoformat()
PATHS = ["companies", "billing-accounts", "users", "invoices", "credit-notes"]


@pytest.fixture
def operator(app: Flask, db: Session) -> dict[str, str]:
    _key, raw = api_tokens.create_key(db, name="receivables", now=clock.now())
    db.flush()
    return {"Authorization": f"Bearer {raw}"}


def invoice(number: str, amount: int = 10000, **extra: Any) -> dict[str, Any]:
    return {
        "company": "ACME",
        "billing_account": "AW-1001",
        "number": number,
        "issue_date": TODAY,
        "due_date": TODAY,
        "lines": [{"description": "Service", "quantity": 1, "unit_price": amount}],
        **extra,
    }


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["put", "post"])
def test_no_key_or_a_portal_token_is_401(
    app: Flask, db: Session, client: FlaskClient, spec_check: SpecCheck, path: str, method: str
) -> None:
    url = f"/api/ar/{path}"
    portal_token = issue_token(app, db)
    for headers in (
        {},
        {"Authorization": f"Bearer {portal_token}"},
        {"Authorization": "Bearer ark_x"},
    ):
        response = getattr(client, method)(url, json={"items": []}, headers=headers)
        assert response.status_code == 401
        assert response.mimetype == PROBLEM
        spec_check(response, url, method)


def test_invoices_appear_in_the_portal_and_a_repeat_changes_nothing(
    client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck, auth: Auth
) -> None:
    body = {"items": [invoice("API-1"), invoice("API-2", 2500)]}
    response = client.put("/api/ar/invoices", json=body, headers=operator)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = spec_check(response, "/api/ar/invoices", "put")
    assert (answer["created"], answer["updated"], answer["unchanged"]) == (2, 0, 0)
    assert [item["at"] for item in answer["items"]] == ["items.0", "items.1"]
    assert all(item["id"].startswith("inv_") for item in answer["items"])

    again = spec_check(
        client.post("/api/ar/invoices", json=body, headers=operator), "/api/ar/invoices", "post"
    )
    assert (again["created"], again["unchanged"]) == (0, 2)
    assert [i["id"] for i in again["items"]] == [i["id"] for i in answer["items"]]

    auth.sign_in("ap@acme.test")  # Acme West only: the invoices are billed to it
    page = auth.client.get("/portal/invoices?q=API-").get_data(as_text=True)
    assert "API-1" in page and "API-2" in page
    detail = auth.client.get(f"/portal/invoices/{answer['items'][0]['id']}")
    assert detail.status_code == 200


def test_a_batch_with_refused_records_writes_nothing_and_names_each(
    client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    body = {
        "items": [
            invoice("API-3"),
            invoice("API-4", company="NOBODY"),
            invoice("API-5"),
            invoice("API-6", billing_account="AE-9999"),
        ]
    }
    response = client.put("/api/ar/invoices", json=body, headers=operator)
    assert response.status_code == 422
    problem = spec_check(response, "/api/ar/invoices", "put")
    assert [e["field"] for e in problem["errors"]] == ["items.1.company", "items.3.billing_account"]
    assert problem["detail"] == "Nothing was saved: 2 records were refused."
    with tenancy.system(db):
        assert db.scalars(select(Invoice).where(Invoice.number.like("API-%"))).all() == []


def test_a_body_of_the_wrong_shape_is_400_naming_every_field(
    client: FlaskClient, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    body = {"items": [invoice("API-7", -5), {"number": "x"}]}
    response = client.post("/api/ar/invoices", json=body, headers=operator)
    assert response.status_code == 400
    fields = {e["field"] for e in spec_check(response, "/api/ar/invoices", "post")["errors"]}
    assert "items.0.lines.0.unit_price" in fields
    assert {"items.1.company", "items.1.lines"} <= fields
    for bad in ("not json", None):
        response = client.post(
            "/api/ar/invoices", data=bad or "", headers={**operator, "Content-Type": "text/plain"}
        )
        assert response.status_code in {400}, response.get_data(as_text=True)
        spec_check(response, "/api/ar/invoices", "post")


def test_companies_accounts_users_and_credit_notes(
    app: Flask, client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    def put(path: str, items: list[dict[str, Any]], **extra: Any) -> Any:
        response = client.put(f"/api/ar/{path}", json={"items": items, **extra}, headers=operator)
        assert response.status_code == 200, response.get_data(as_text=True)
        return spec_check(response, f"/api/ar/{path}", "put")

    put("companies", [{"code": "API-CO", "name": "Api Co", "currency": "USD"}])
    put("billing-accounts", [{"company": "API-CO", "number": "A-1", "name": "Main"}])
    users = put(
        "users",
        [{"company": "API-CO", "email": "owner@api-co.test", "role": "customer.admin"}],
        invite=False,
    )
    assert users["items"][0]["id"].startswith("usr_")
    assert app.extensions["portal.jobs"].handed == []
    put("invoices", [invoice("API-CO-1", 5000, company="API-CO", billing_account="A-1")])
    note = {
        "company": "API-CO",
        "number": "CN-1",
        "invoice": "API-CO-1",
        "amount": 5000,
        "issue_date": TODAY,
    }
    assert put("credit-notes", [note])["created"] == 1
    assert put("credit-notes", [note])["unchanged"] == 1
    with tenancy.system(db):
        company = db.scalars(select(Company).where(Company.code == "API-CO")).one()
        paid = db.scalars(select(Invoice).where(Invoice.number == "API-CO-1")).one()
        assert (company.name, paid.status.value, paid.balance_due) == ("Api Co", "paid", 0)
    changed = client.put(
        "/api/ar/credit-notes", json={"items": [{**note, "amount": 10}]}, headers=operator
    )
    assert changed.status_code == 422
    assert spec_check(changed, "/api/ar/credit-notes", "put")["errors"][0]["field"] == (
        "items.0.number"
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(PATHS),
    body=st.one_of(
        st.dictionaries(st.sampled_from(["items", "invite", "x"]), st.none() | st.integers()),
        st.fixed_dictionaries(
            {
                "items": st.lists(
                    st.dictionaries(
                        st.text(max_size=12), st.text(max_size=12) | st.integers() | st.none()
                    ),
                    max_size=3,
                )
            }
        ),
    ),
)
def test_arbitrary_bodies_are_answered_never_a_500(
    client: FlaskClient, operator: dict[str, str], spec_check: SpecCheck, path: str, body: Any
) -> None:
    response = client.put(f"/api/ar/{path}", json=body, headers=operator)
    assert response.status_code in {200, 400, 422}, response.get_data(as_text=True)
    spec_check(response, f"/api/ar/{path}", "put")
