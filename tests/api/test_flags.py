"""The rollout flags through the API: a 503 problem (RFC 9457) while the portal is off, a clear
503 for a part switched off, and every operation documents that answer."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal import flags, tenancy
from portal.models import FeatureFlag
from tests.api.conftest import PROBLEM, SpecCheck
from tests.factories import account_named, make_invoice
from tests.web.payment_helpers import method

Headers = Callable[..., dict[str, str]]


def switch(db: Session, name: str, on: bool) -> None:
    with tenancy.system(db):
        db.merge(FeatureFlag(name=name, enabled=on))
        db.flush()


def test_every_operation_documents_the_503_problem(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").get_json()
    operations = [
        (path, verb, operation)
        for path, item in document["paths"].items()
        for verb, operation in item.items()
    ]
    assert len(operations) > 20
    for path, verb, operation in operations:
        answers = operation["responses"]
        for status in ("401", "503"):
            assert status in answers, (verb, path, status)
            assert PROBLEM in answers[status]["content"], (verb, path, status)


def test_the_api_answers_a_503_problem_while_the_portal_is_off(
    client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    headers = bearer()
    switch(db, flags.MASTER, False)
    response = client.get("/api/portal/dashboard", headers=headers)
    assert response.status_code == 503 and response.mimetype == PROBLEM
    assert response.headers["Retry-After"] == "300"
    assert response.headers["Cache-Control"] == "no-store"
    problem = spec_check(response, "/api/portal/dashboard")
    assert problem["title"] == "Unavailable" and problem["status"] == 503
    assert problem["detail"] == (
        "The Billing Portal is down for maintenance. Please try again in about 5 minutes."
    )
    arabic = client.get("/api/portal/dashboard", headers={**headers, "Accept-Language": "ar"})
    assert arabic.status_code == 503
    assert arabic.get_json()["detail"].startswith("بوابة الفواتير متوقفة للصيانة.")
    # Before authentication: no token at all, and a write, get the same answer (not 401/403).
    assert client.get("/api/portal/invoices").status_code == 503
    assert client.post("/api/portal/payment", json={}).status_code == 503
    assert client.get("/api/openapi.json").status_code == 503


def test_the_operator_api_waits_too(client: FlaskClient, db: Session) -> None:
    switch(db, flags.MASTER, False)
    response = client.get("/api/ar/events", headers={"Authorization": "Bearer ark_nope"})
    assert response.status_code == 503 and response.mimetype == PROBLEM
    assert response.headers["Retry-After"] == "300"


def test_paying_through_the_api_is_refused_with_a_sentence_while_payment_is_off(
    client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    inv = make_invoice(db, account_named(db, "Acme West"), "120.00", due=-5)
    body = {"invoices": [{"id": inv.public_id}], "method_id": method(db, "4242").public_id}
    headers = {**bearer(), "Idempotency-Key": "flag-off-1"}
    switch(db, flags.PAYMENT, False)
    response = client.post("/api/portal/payment", json=body, headers=headers)
    assert response.status_code == 503
    problem = spec_check(response, "/api/portal/payment", "post")
    assert problem["detail"] == "Online payment isn't available right now."
    assert inv.balance_due > 0
    # Reading what exists still works.
    assert client.get("/api/portal/invoices", headers=headers).status_code == 200


def test_statements_through_the_api_are_refused_while_statements_are_off(
    client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    headers = bearer()
    switch(db, flags.STATEMENTS, False)
    listed = client.get("/api/portal/statements", headers=headers)
    assert listed.status_code == 503
    problem = spec_check(listed, "/api/portal/statements")
    assert problem["detail"] == "Statements aren't available right now."
    asked = client.post(
        "/api/portal/statements",
        json={"start_date": "2026-01-01", "end_date": "2026-01-31"},
        headers=headers,
    )
    assert asked.status_code == 503
    spec_check(asked, "/api/portal/statements", "post")
