"""A dispute holds its invoice against payments: opening one cancels the invoice's scheduled
payments (their payers are told why), a scheduled payment whose invoice is disputed when its day
comes is canceled instead of charged, a payment that succeeds leaves a disputed invoice
Disputed, and a dispute that ends while a payment is processing leaves the invoice Processing."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from portal import tenancy
from portal.gateways import ChargeResult, ChargeStatus
from portal.models import Invoice, InvoiceStatus, PaymentStatus
from portal.services.payments import transitions
from tests.conftest import Auth, Inbox, csrf_token
from tests.factories import make_payment
from tests.web.payment_helpers import audit_events, invoice, method, pay, payment, run_jobs


def _dispute_invoice(client: FlaskClient, public_id: str) -> None:
    path = f"/portal/invoices/{public_id}/dispute"
    response = client.post(
        path,
        data={
            "csrf_token": csrf_token(client, path),
            "reason": "quality",
            "message": "Two of the seats never worked.",
        },
    )
    assert response.status_code == 302, response.text


def _schedule(app: Flask, client: FlaskClient, db: Session, number: str) -> str:
    day = app.extensions["portal.clock"].today() + timedelta(days=3)
    inv = invoice(db, number)
    _response, pid = pay(client, [inv], method(db, "4242").public_id, scheduled_for=day.isoformat())
    assert payment(db, pid).status is PaymentStatus.SCHEDULED
    return pid


def _mail_text(message: object) -> str:
    part = next(p for p in message.walk() if p.get_content_type() == "text/plain")  # type: ignore[attr-defined]
    return str(part.get_payload(decode=True).decode())


def test_opening_a_dispute_cancels_the_scheduled_payment_and_tells_the_payer(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    pid = _schedule(app, client, db, "INV-1003")
    run_jobs(app)  # the scheduled run waits for its day; nothing else is due
    _dispute_invoice(client, invoice(db, "INV-1003").public_id)
    canceled = payment(db, pid)
    assert canceled.status is PaymentStatus.CANCELED
    assert canceled.failure_code == "invoice_disputed"
    assert invoice(db, "INV-1003").status is InvoiceStatus.DISPUTED
    (event,) = audit_events(db, "Portal.PaymentCanceled")
    assert event.properties["payment_id"] == pid
    run_jobs(app)
    subjects = sorted(m["Subject"] for m in smtp.messages)
    assert len(subjects) == 2 and subjects[0] == "New dispute: INV-1003 (Acme Corp)"
    assert subjects[1].startswith("Scheduled payment canceled: $")
    payer = next(m for m in smtp.messages if m["Subject"].startswith("Scheduled"))
    assert payer["To"] == "admin@acme.test"
    assert "an invoice it pays was disputed" in _mail_text(payer)
    assert payer["List-Unsubscribe"].startswith("<http://localhost/unsubscribe/")
    assert payer["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # Its day comes: nothing is charged, nobody is mailed again, the invoice stays held.
    app.extensions["portal.clock"].advance(timedelta(days=3, hours=7))
    run_jobs(app)
    run_jobs(app)
    assert payment(db, pid).status is PaymentStatus.CANCELED
    after = invoice(db, "INV-1003")
    assert after.status is InvoiceStatus.DISPUTED and after.paid_by_payments == 0
    assert len(smtp.messages) == 2


def test_a_scheduled_payment_refuses_an_invoice_disputed_when_it_starts(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    pid = _schedule(app, client, db, "INV-1004")
    owed = invoice(db, "INV-1004").balance_due
    # Disputed behind the scheduled payment's back (as a dispute committed just before it
    # starts would leave it): on its day it must look again, under the invoice's lock.
    with tenancy.system(db):
        db.execute(
            update(Invoice)
            .where(Invoice.number == "INV-1004")
            .values(status=InvoiceStatus.DISPUTED)
            .execution_options(synchronize_session=False)
        )
    app.extensions["portal.clock"].advance(timedelta(days=3, hours=7))
    run_jobs(app)
    run_jobs(app)
    done = payment(db, pid)
    assert done.status is PaymentStatus.CANCELED and done.failure_code == "invoice_disputed"
    after = invoice(db, "INV-1004")
    assert after.status is InvoiceStatus.DISPUTED and after.balance_due == owed
    (mail,) = smtp.messages
    assert mail["Subject"].startswith("Scheduled payment canceled")
    assert "an invoice it pays was disputed" in _mail_text(mail)


def test_a_payment_that_succeeds_leaves_a_disputed_invoice_disputed(
    app: Flask, db: Session
) -> None:
    inv = invoice(db, "INV-1002")
    on_its_way = make_payment(db, inv, "10.00", status=PaymentStatus.PROCESSING)
    with tenancy.system(db):
        inv.status = InvoiceStatus.DISPUTED
        db.flush()
        now = app.extensions["portal.clock"].now()
        done = ChargeResult(ChargeStatus.SUCCEEDED, "sandbox_ch_dispute_test")
        assert transitions.apply_result(db, on_its_way, done, now=now)
    after = invoice(db, "INV-1002")
    assert after.status is InvoiceStatus.DISPUTED and after.paid_by_payments == 1_000


def test_a_dispute_that_ends_while_a_payment_is_processing_leaves_the_invoice_processing(
    app: Flask, db: Session
) -> None:
    inv = invoice(db, "INV-1011")
    make_payment(db, inv, "10.00", status=PaymentStatus.PROCESSING)
    with tenancy.system(db):
        inv.status = InvoiceStatus.DISPUTED  # the factory marked it processing
        db.flush()
    from tests.web.test_disputes_thread import _dispute

    public_id = _dispute(db, "INV-1011").public_id
    rejected = app.test_cli_runner().invoke(
        args=["disputes", "reject", public_id, "--reason", "Delivered as billed."]
    )
    assert rejected.exit_code == 0, rejected.output
    assert invoice(db, "INV-1011").status is InvoiceStatus.PROCESSING
