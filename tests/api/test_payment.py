"""POST /api/portal/payment and GET /api/portal/payment/{id}: the web flow's service, once per
Idempotency-Key, through the sandbox gateway."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import Invoice, Payment, PaymentStatus, TokenScope
from tests.api.conftest import PROBLEM, SpecCheck
from tests.factories import account_named, make_company, make_invoice, minor
from tests.web.payment_helpers import invoice, method

PAY = "/api/portal/payment"
ONE = "/api/portal/payment/{public_id}"
Headers = Callable[..., dict[str, str]]


def payments_of(db: Session, inv: Invoice) -> int:
    from portal.models import PaymentAllocation

    with tenancy.system(db):
        query = select(func.count(Payment.id)).join(
            PaymentAllocation, PaymentAllocation.payment_id == Payment.id
        )
        return int(db.scalar(query.where(PaymentAllocation.invoice_id == inv.id)) or 0)


def post(client: FlaskClient, headers: dict[str, str], key: str | None, body: Any) -> Any:
    sent = dict(headers)
    if key is not None:
        sent["Idempotency-Key"] = key
    return client.post(PAY, json=body, headers=sent)


def test_pay_an_invoice_then_read_its_receipt(
    client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    inv = make_invoice(db, account_named(db, "Acme West"), "1234.56", due=-45)
    body = {"invoices": [{"id": inv.public_id}], "method_id": method(db, "4242").public_id}
    response = post(client, bearer(), "order 42 / first try", body)
    assert response.status_code == 201, response.get_data(as_text=True)
    made = spec_check(response, PAY, "post")
    assert made["replayed"] is False and made["group_id"] is None
    [paid] = made["payments"]
    assert paid["amount"]["amount_minor"] == minor("1234.56")
    assert paid["status"] == "succeeded" and paid["receipt"]["number"] == paid["reference"]
    polled = client.get(paid["poll_url"], headers=bearer())
    assert polled.status_code == 200
    again = spec_check(polled, ONE)
    assert again["id"] == paid["id"] and again["processing"] is False
    assert invoice(db, inv.number).balance_due == 0


def test_the_same_key_twice_makes_one_payment(
    client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    inv = make_invoice(db, account_named(db, "Acme West"), "300.00", due=10)
    body = {
        "invoices": [{"id": inv.public_id, "amount_minor": minor("100.00")}],
        "method_id": method(db, "4242").public_id,
    }
    headers = bearer()
    first = post(client, headers, "k-1", body)
    second = post(client, headers, "k-1", body)
    assert first.status_code == 201 and second.status_code == 200
    one, two = spec_check(first, PAY, "post"), spec_check(second, PAY, "post")
    assert [p["id"] for p in one["payments"]] == [p["id"] for p in two["payments"]]
    assert two["replayed"] is True
    assert payments_of(db, inv) == 1
    assert invoice(db, inv.number).balance_due == minor("200.00")


def test_the_same_key_with_another_body_is_409(
    client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    inv = make_invoice(db, account_named(db, "Acme West"), "300.00", due=10)
    visa = method(db, "4242").public_id
    headers = bearer()
    first = {"invoices": [{"id": inv.public_id, "amount_minor": 5000}], "method_id": visa}
    assert post(client, headers, "k-2", first).status_code == 201
    other = {"invoices": [{"id": inv.public_id, "amount_minor": 6000}], "method_id": visa}
    response = post(client, headers, "k-2", other)
    assert response.status_code == 409
    problem = spec_check(response, PAY, "post")
    assert problem["detail"] == "Payment already processed."
    assert payments_of(db, inv) == 1


def test_a_read_only_token_cannot_pay(
    client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    inv = make_invoice(db, account_named(db, "Acme West"), "80.00")
    body = {"invoices": [{"id": inv.public_id}], "method_id": method(db, "4242").public_id}
    response = post(client, bearer(scope=TokenScope.READ), "k-3", body)
    assert response.status_code == 403
    spec_check(response, PAY, "post")
    assert payments_of(db, inv) == 0


def test_a_foreign_invoice_or_payment_is_404(
    client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    other = make_company(db, "Initech")
    foreign = make_invoice(db, other.billing_accounts[0], "50.00")
    body = {"invoices": [{"id": foreign.public_id}], "method_id": method(db, "4242").public_id}
    response = post(client, bearer(), "k-4", body)
    assert response.status_code == 404
    assert spec_check(response, PAY, "post")["detail"] == "Invoice not found."
    assert payments_of(db, foreign) == 0
    missing = client.get(ONE.format(public_id="pay_nothing"), headers=bearer())
    assert missing.status_code == 404
    spec_check(missing, ONE)


def test_a_restricted_user_cannot_see_another_accounts_payment(
    client: FlaskClient, db: Session, bearer: Headers
) -> None:
    east = make_invoice(db, account_named(db, "Acme East"), "70.00")
    body = {"invoices": [{"id": east.public_id}], "method_id": method(db, "4242").public_id}
    made = post(client, bearer(), "k-5", body).get_json()
    pid = made["payments"][0]["id"]
    response = client.get(ONE.format(public_id=pid), headers=bearer("ap@acme.test"))
    assert response.status_code == 404  # ap@acme.test pays for Acme West only
    assert response.mimetype == PROBLEM
    body = {"invoices": [{"id": east.public_id}], "method_id": method(db, "4242").public_id}
    theirs = post(client, bearer("ap@acme.test"), "k-5b", body)
    assert theirs.status_code == 404
    assert payments_of(db, east) == 1


def test_refusals_use_the_runbook_copy(
    client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    inv = make_invoice(db, account_named(db, "Acme West"), "90.00")
    headers = bearer()
    too_much = {
        "invoices": [{"id": inv.public_id, "amount_minor": minor("91.00")}],
        "method_id": method(db, "4242").public_id,
    }
    response = post(client, headers, "k-6", too_much)
    assert response.status_code == 422
    problem = spec_check(response, PAY, "post")
    assert problem["detail"] == "Payment validation failed."
    assert problem["errors"][0]["field"] == "invoices.0.amount_minor"
    no_method = {"invoices": [{"id": inv.public_id}], "method_id": "pm_nothing"}
    response = post(client, headers, "k-7", no_method)
    assert response.status_code == 422
    assert spec_check(response, PAY, "post")["errors"][0]["field"] == "method_id"
    missing_key = post(client, headers, None, no_method)
    assert missing_key.status_code == 400
    assert spec_check(missing_key, PAY, "post")["status"] == 400
    assert payments_of(db, inv) == 0


def test_a_declined_card_answers_a_failed_payment(
    client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    inv = make_invoice(db, account_named(db, "Acme West"), "480.00", due=-10)
    body = {"invoices": [{"id": inv.public_id}], "method_id": method(db, "0341").public_id}
    response = post(client, bearer(), "k-8", body)
    assert response.status_code == 201
    [failed] = spec_check(response, PAY, "post")["payments"]
    assert failed["status"] == PaymentStatus.FAILED.value
    assert failed["failure_reason"] == "your card was declined" and failed["receipt"] is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "invoices": st.one_of(
                json_values,
                st.lists(
                    st.fixed_dictionaries(
                        {"id": st.text(max_size=70), "amount_minor": st.integers() | st.none()}
                    ),
                    max_size=3,
                ),
            ),
            "method_id": st.one_of(json_values, st.text(max_size=70)),
        }
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, key=st.one_of(st.none(), st.text(max_size=300)))
def test_bad_bodies_are_400_or_422_never_500(
    client: FlaskClient, bearer: Headers, spec_check: SpecCheck, body: Any, key: str | None
) -> None:
    headers = bearer()
    sent = dict(headers)
    if key is not None:
        if any(ord(c) < 32 or ord(c) > 126 for c in key):
            key = key.encode("ascii", "replace").decode()
            key = "".join(c if 32 <= ord(c) <= 126 else "?" for c in key)
        sent["Idempotency-Key"] = key
    response = client.post(PAY, json=body, headers=sent)
    assert response.status_code in (400, 404, 409, 422), response.get_data(as_text=True)
    spec_check(response, PAY, "post")


def test_a_body_that_is_not_json_is_refused(
    client: FlaskClient, bearer: Headers, spec_check: SpecCheck
) -> None:
    headers = {**bearer(), "Idempotency-Key": "k-9"}
    for sent in ({"data": {"invoices": "inv_x"}}, {}):
        response = client.post(PAY, headers=headers, **sent)
        assert response.status_code in (400, 415)  # SpecTree or the view refuses it; no 500
        spec_check(response, PAY, "post")
