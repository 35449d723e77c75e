"""Operator actions under /api/ar/: void, credit, answer a dispute, for the company named in
the body; another company's invoice or dispute is a 404, as a missing one. Each action writes
its event to the feed with the change."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import (
    ACTIVE_DISPUTE,
    ArEvent,
    Company,
    Dispute,
    Invoice,
    InvoiceStatus,
    PaymentStatus,
)
from portal.services import api_tokens, ar_events
from portal.services.payments.selection import reserved_amounts
from tests.api.conftest import PROBLEM, SpecCheck
from tests.factories import company_named, make_payment

VOID = "/api/ar/invoices/{reference}/void"
CREDIT = "/api/ar/invoices/{reference}/credit"
ANSWER = "/api/ar/disputes/{public_id}/answer"


@pytest.fixture
def operator(app: Flask, db: Session) -> dict[str, str]:
    _key, raw = api_tokens.create_key(
        db, name="ar-actions", now=app.extensions["portal.clock"].now()
    )
    db.flush()
    return {"Authorization": f"Bearer {raw}"}


def _acme(db: Session) -> Company:
    return company_named(db, "Acme Corp")


def _other(db: Session) -> Company:
    with tenancy.system(db):
        return db.scalars(select(Company).where(Company.name != "Acme Corp")).first()  # type: ignore[return-value]


def _open_invoice(db: Session, company: Company) -> Invoice:
    """An open invoice with nothing paid, credited or on its way."""
    with tenancy.system(db):
        for invoice in db.scalars(
            select(Invoice)
            .where(
                Invoice.company_id == company.id,
                Invoice.status == InvoiceStatus.OPEN,
                Invoice.amount_paid == 0,
            )
            .order_by(Invoice.id)
        ):
            if not reserved_amounts(db, [invoice.id]):
                return invoice
    raise AssertionError("no open invoice in the seed")


def _events(db: Session, subject: str) -> list[ArEvent]:
    with tenancy.system(db):
        return list(db.scalars(select(ArEvent).where(ArEvent.subject_id == subject)))


def test_void_by_number_then_again(
    client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    company = _acme(db)
    invoice = _open_invoice(db, company)
    path = VOID.format(reference=invoice.number)
    response = client.post(path, json={"company_id": company.public_id}, headers=operator)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = spec_check(response, VOID.replace("{reference}", "{reference}"), "post")
    assert body["status"] == "void" and body["id"] == invoice.public_id
    again = client.post(
        VOID.format(reference=invoice.public_id),
        json={"company_id": company.public_id},
        headers=operator,
    )
    assert again.status_code == 200 and again.get_json()["status"] == "void"
    assert [e.kind for e in _events(db, invoice.public_id)] == [ar_events.INVOICE_VOIDED]


def test_a_paid_or_paying_invoice_is_not_voided(
    client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    company = _acme(db)
    invoice = _open_invoice(db, company)
    make_payment(db, invoice, "1.00")
    response = client.post(
        VOID.format(reference=invoice.number),
        json={"company_id": company.public_id},
        headers=operator,
    )
    assert response.status_code == 409 and response.mimetype == PROBLEM
    spec_check(response, VOID, "post")
    other = _open_invoice(db, company)
    make_payment(db, other, status=PaymentStatus.PROCESSING)
    response = client.post(
        VOID.format(reference=other.number),
        json={"company_id": company.public_id},
        headers=operator,
    )
    assert response.status_code == 409
    assert "on its way" in response.get_json()["detail"]


def test_credit_an_invoice(
    client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    company = _acme(db)
    invoice = _open_invoice(db, company)
    response = client.post(
        CREDIT.format(reference=invoice.public_id),
        json={"company_id": company.public_id, "amount_minor": 100, "reason": "goodwill"},
        headers=operator,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = spec_check(response, CREDIT, "post")
    assert body["number"].startswith("CN-") and body["amount"]["amount_minor"] == 100
    assert body["invoice"]["balance_due"]["amount_minor"] == invoice.total - 100
    [event] = _events(db, invoice.public_id)
    assert event.kind == ar_events.INVOICE_CREDITED
    too_much = client.post(
        CREDIT.format(reference=invoice.public_id),
        json={"company_id": company.public_id, "amount_minor": invoice.total},
        headers=operator,
    )
    assert too_much.status_code == 422
    spec_check(too_much, CREDIT, "post")


def test_answer_a_dispute_with_a_credit_then_again(
    client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    company = _acme(db)
    with tenancy.system(db):
        dispute = db.scalars(
            select(Dispute)
            .where(Dispute.company_id == company.id, Dispute.status.in_(ACTIVE_DISPUTE))
            .order_by(Dispute.id)
        ).first()
    assert dispute is not None, "the seed has an open dispute"
    path = ANSWER.format(public_id=dispute.public_id)
    no_amount = client.post(
        path, json={"company_id": company.public_id, "outcome": "credit_issued"}, headers=operator
    )
    assert no_amount.status_code == 400
    no_reason = client.post(
        path, json={"company_id": company.public_id, "outcome": "rejected"}, headers=operator
    )
    assert no_reason.status_code == 400
    response = client.post(
        path,
        json={"company_id": company.public_id, "outcome": "credit_issued", "amount_minor": 1},
        headers=operator,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = spec_check(response, ANSWER, "post")
    assert body["status"] == "credit_issued" and body["credit_note_number"].startswith("CN-")
    resolved = [e for e in _events(db, dispute.public_id) if e.kind == ar_events.DISPUTE_RESOLVED]
    assert len(resolved) == 1
    again = client.post(
        path,
        json={"company_id": company.public_id, "outcome": "rejected", "reason": "no"},
        headers=operator,
    )
    assert again.status_code == 409
    spec_check(again, ANSWER, "post")


def test_another_companys_things_are_404(
    client: FlaskClient, db: Session, operator: dict[str, str], spec_check: SpecCheck
) -> None:
    acme, other = _acme(db), _other(db)
    invoice = _open_invoice(db, acme)
    for path, template, extra in (
        (VOID.format(reference=invoice.number), VOID, {}),
        (CREDIT.format(reference=invoice.public_id), CREDIT, {"amount_minor": 1}),
        (ANSWER.format(public_id="dsp_nothing"), ANSWER, {"outcome": "rejected", "reason": "x"}),
    ):
        for company_id in (other.public_id, "cmp_nobody"):
            response = client.post(path, json={"company_id": company_id, **extra}, headers=operator)
            assert response.status_code == 404, (path, response.get_data(as_text=True))
            spec_check(response, template, "post")
    assert _events(db, invoice.public_id) == []


def test_actions_need_an_operator_key(client: FlaskClient, spec_check: SpecCheck) -> None:
    response = client.post(VOID.format(reference="x"), json={"company_id": "cmp_x"})
    assert response.status_code == 401
    spec_check(response, VOID, "post")


@pytest.mark.parametrize(
    ("template", "body"),
    [
        (VOID, {}),
        (VOID, {"company_id": ""}),
        (VOID, {"company_id": 5}),
        (VOID, {"company_id": "x" * 61}),
        (CREDIT, {"company_id": "cmp_x"}),
        (CREDIT, {"company_id": "cmp_x", "amount_minor": 0}),
        (CREDIT, {"company_id": "cmp_x", "amount_minor": -5}),
        (CREDIT, {"company_id": "cmp_x", "amount_minor": "ten"}),
        (CREDIT, {"company_id": "cmp_x", "amount_minor": 10**14}),
        (ANSWER, {"company_id": "cmp_x", "outcome": "accepted"}),
        (ANSWER, {"company_id": "cmp_x", "outcome": "rejected", "reason": "r" * 501}),
        (ANSWER, None),
    ],
)
def test_bad_input_is_a_400(
    client: FlaskClient,
    operator: dict[str, str],
    spec_check: SpecCheck,
    template: str,
    body: Any,
) -> None:
    path = template.replace("{reference}", "INV-1").replace("{public_id}", "dsp_x")
    if body is None:
        response = client.post(
            path, data="not json", headers=operator | {"Content-Type": "application/json"}
        )
    else:
        response = client.post(path, json=body, headers=operator)
    assert response.status_code == 400, response.get_data(as_text=True)
    spec_check(response, template, "post")


def test_a_long_reference_is_a_404(
    client: FlaskClient, db: Session, operator: dict[str, str]
) -> None:
    company = _acme(db)
    response = client.post(
        VOID.format(reference="I" * 300), json={"company_id": company.public_id}, headers=operator
    )
    assert response.status_code == 404
