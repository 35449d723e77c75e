"""Disputing an invoice: structured reason, amount within the balance, message kept."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import AuditEvent, Dispute, Invoice, InvoiceStatus
from tests.conftest import Auth, Inbox, csrf_token


def _invoice(db: Session, number: str) -> Invoice:
    with tenancy.system(db):
        return db.scalars(select(Invoice).where(Invoice.number == number)).one()


def _post(client: FlaskClient, public_id: str, **data: str):  # type: ignore[no-untyped-def]
    path = f"/portal/invoices/{public_id}/dispute"
    token = csrf_token(client, "/portal/dashboard")
    return client.post(path, data={"csrf_token": token, **data})


def test_open_a_dispute(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    invoice = _invoice(db, "INV-1003")
    page = client.get(f"/portal/invoices/{invoice.public_id}").get_data(as_text=True)
    assert f'href="/portal/invoices/{invoice.public_id}/dispute"' in page
    response = _post(
        client,
        invoice.public_id,
        reason="quality",
        amount="100.00",
        message="Two of the seats never worked.",
    )
    assert response.headers["Location"] == f"/portal/invoices/{invoice.public_id}"
    shown = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Dispute sent." in shown and "Two of the seats never worked." in shown
    assert "A problem with quality" in shown
    with tenancy.system(db):
        db.expire_all()
        dispute = db.scalars(select(Dispute).where(Dispute.invoice_id == invoice.id)).one()
        assert dispute.amount_disputed == 10_000 and dispute.reason.value == "quality"
        assert db.get(Invoice, invoice.id).status is InvoiceStatus.DISPUTED  # type: ignore[union-attr]
        names = db.scalars(select(AuditEvent.name)).all()
    assert "Portal.DisputeOpened" in names


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"reason": "quality", "message": ""}, "Tell us what is wrong with this invoice."),
        ({"reason": "quality", "amount": "999999", "message": "x"}, "more than the balance due"),
        ({"reason": "quality", "amount": "-5", "message": "x"}, "Enter an amount above zero."),
        ({"reason": "nonsense", "message": "x"}, "Not a valid choice"),
    ],
)
def test_bad_input_is_explained_and_kept(
    client: FlaskClient, signed_in: Auth, db: Session, data: dict[str, str], message: str
) -> None:
    invoice = _invoice(db, "INV-1003")
    response = _post(client, invoice.public_id, **data)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    with tenancy.system(db):
        assert db.scalars(select(Dispute).where(Dispute.invoice_id == invoice.id)).all() == []


def test_paid_invoices_cannot_be_disputed(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    invoice = _invoice(db, "INV-1007")
    page = client.get(f"/portal/invoices/{invoice.public_id}").get_data(as_text=True)
    assert "/dispute" not in page
    response = _post(client, invoice.public_id, reason="other", message="x")
    assert response.headers["Location"] == f"/portal/invoices/{invoice.public_id}"


def test_foreign_invoice_dispute_is_not_found(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    foreign = _invoice(db, "RE-2026-002")
    assert client.get(f"/portal/invoices/{foreign.public_id}/dispute").status_code == 404
    assert _post(client, foreign.public_id, reason="other", message="x").status_code == 404


def test_opening_a_dispute_mails_the_receivables_team_once(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    invoice = _invoice(db, "INV-1003")
    response = _post(
        client, invoice.public_id, reason="quality", message="Two of the seats never worked."
    )
    assert response.status_code == 302
    again = _post(client, invoice.public_id, reason="quality", message="Resent by mistake.")
    assert again.status_code == 302  # already disputed: refused, nothing more recorded
    jobs = app.extensions["portal.jobs"]
    now = app.extensions["portal.clock"].now()
    assert jobs.run_due(now) == 1 and jobs.run_due(now) == 0
    (mail,) = smtp.messages
    assert mail["To"] == "receivables@billing-portal.invalid"
    assert mail["Subject"] == "New dispute: INV-1003 (Acme Corp)"
    text = next(p for p in mail.walk() if p.get_content_type() == "text/plain")
    body = text.get_payload(decode=True).decode()
    assert "Acme Corp disputed invoice INV-1003." in body
    assert "Two of the seats never worked." in body and "Alex Admin" in body
