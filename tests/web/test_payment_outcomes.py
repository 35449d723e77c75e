"""What happens after submit: webhooks, bank debits settling, scheduled payments, receipts, mail."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from datetime import date, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.gateways import sandbox
from portal.models import AuditEvent, InvoiceStatus, PaymentStatus, SandboxCharge
from tests.conftest import Auth, Inbox, csrf_token
from tests.factories import account_named, make_invoice
from tests.web.payment_helpers import invoice, method, pay, payment, run_jobs
from tests.web.test_payment_methods import start_setup


def _bank(client: FlaskClient, db: Session) -> str:
    hosted = start_setup(client, "bank_account")
    page = client.get(hosted).get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    done = client.post(
        hosted, data={"csrf_token": token, "routing": "110000000", "account": "000123456789"}
    )
    client.get(done.headers["Location"])
    # Its "payment method added" security alert goes now, so what follows counts the payment's
    # work alone.
    app = client.application
    app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now())
    return method(db, "6789").public_id


def _signed(app: Flask, body: dict[str, object], when: int | None = None) -> tuple[bytes, str]:
    raw = json.dumps(body).encode()
    secret = sandbox.signing_secret(app.config["SECRET_KEY"])
    return raw, sandbox.sign(raw, secret, when or int(time.time()))


def _event(reference: str, status: str, event_id: str) -> dict[str, object]:
    return {
        "id": event_id,
        "type": f"charge.{status}",
        "data": {"reference": reference, "status": status, "failure_code": None},
    }


def _webhook(client: FlaskClient, raw: bytes, signature: str) -> tuple[int, dict[str, str]]:
    response = client.post(
        "/webhooks/sandbox",
        data=raw,
        headers={sandbox.SIGNATURE_HEADER: signature, "Content-Type": "application/json"},
    )
    return response.status_code, response.get_json()


def test_a_bank_debit_processes_then_settles_through_the_signed_webhook(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    bank = _bank(client, db)
    assert [m["Subject"] for m in smtp.messages] == ["A payment method was added"]  # an alert
    smtp.messages.clear()
    inv = invoice(db, "INV-1004")
    _response, pid = pay(client, [inv], bank)
    page = client.get(f"/portal/payments/{pid}").get_data(as_text=True)
    assert "Your payment is being processed" in page
    assert payment(db, pid).status is PaymentStatus.PROCESSING
    assert invoice(db, "INV-1004").status is InvoiceStatus.PROCESSING
    assert run_jobs(app) == 0  # not due yet: it settles a few seconds later
    app.extensions["portal.clock"].advance(timedelta(seconds=5))
    assert run_jobs(app) >= 1  # the settlement webhook, then the receipt mail
    run_jobs(app)
    done = payment(db, pid)
    assert done.status is PaymentStatus.SUCCEEDED and done.receipt_number
    assert invoice(db, "INV-1004").status is InvoiceStatus.PAID
    fragment = client.get(
        f"/portal/payments/{pid}", headers={"HX-Request": "true", "HX-Target": "payment-panel"}
    ).get_data(as_text=True)
    assert "processed successfully" in fragment and 'data-hx-trigger="load' not in fragment
    assert 'data-hx-swap-oob="innerHTML:#payment-announcer"' in fragment
    assert [m["Subject"] for m in smtp.messages] == [
        f"Receipt {done.receipt_number}: payment of ${done.amount / 100:,.2f}"
    ]
    body = smtp.messages[0].get_payload(decode=True).decode()
    assert "INV-1004" in body and f"http://localhost/portal/payments/{pid}" in body  # PUBLIC_URL


def test_bad_signatures_are_refused(app: Flask, client: FlaskClient) -> None:
    raw, signature = _signed(app, _event("sandbox_ch_x", "succeeded", "evt_1"))
    assert _webhook(client, raw, "t=1,v1=deadbeef")[0] == 400
    assert _webhook(client, raw + b" ", signature)[0] == 400  # tampered body
    old = int(time.time()) - 3600
    assert _webhook(client, *_signed(app, _event("x", "succeeded", "evt_2"), old))[0] == 400
    missing = client.post("/webhooks/sandbox", data=raw)
    assert missing.status_code == 400
    assert client.post("/webhooks/stripe", data=raw).status_code == 404  # not the gateway here


def test_replayed_and_out_of_order_events_make_one_outcome(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    bank = _bank(client, db)
    inv = invoice(db, "INV-1004")
    owed = inv.balance_due
    _response, pid = pay(client, [inv], bank)
    reference = payment(db, pid).gateway_reference
    assert reference
    succeeded = _signed(app, _event(reference, "succeeded", f"evt_{reference}_succeeded"))
    outcomes = [_webhook(client, *succeeded)[1]["outcome"] for _ in range(3)]
    assert outcomes == ["applied", "duplicate", "duplicate"]
    # A late "processing" and a contradicting "failed" after success change nothing.
    late = _webhook(client, *_signed(app, _event(reference, "processing", "evt_late")))
    assert late == (200, {"received": True, "outcome": "unchanged"})
    contrary = _webhook(client, *_signed(app, _event(reference, "failed", "evt_contrary")))
    assert contrary[1]["outcome"] == "unchanged"
    done = payment(db, pid)
    assert done.status is PaymentStatus.SUCCEEDED
    after = invoice(db, "INV-1004")
    assert after.paid_by_payments == owed and after.balance_due == 0
    with tenancy.system(db):
        made = db.scalars(select(AuditEvent).where(AuditEvent.name == "Portal.PaymentMade")).all()
    assert len(made) == 1
    # The settlement job arriving afterwards is harmless as well.
    app.extensions["portal.clock"].advance(timedelta(seconds=5))
    run_jobs(app)
    assert invoice(db, "INV-1004").paid_by_payments == owed


def test_an_event_for_an_unknown_charge_is_ignored(app: Flask, client: FlaskClient) -> None:
    status, body = _webhook(client, *_signed(app, _event("sandbox_ch_none", "succeeded", "e9")))
    assert (status, body["outcome"]) == (200, "ignored")


def test_reconciliation_asks_the_gateway_about_stuck_payments(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    from workers import jobs

    bank = _bank(client, db)
    _response, pid = pay(client, [invoice(db, "INV-1004")], bank)
    app.extensions["portal.jobs"].clear()  # the webhook never arrives
    app.extensions["portal.clock"].advance(timedelta(minutes=3))
    with app.app_context():
        assert jobs.reconcile_payments() >= 1
    assert payment(db, pid).status is PaymentStatus.SUCCEEDED


def _tomorrow(app: Flask, days: int = 1) -> date:
    today: date = app.extensions["portal.clock"].today()
    return today + timedelta(days=days)


def test_a_scheduled_payment_runs_on_its_day_and_mails_the_payer(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    inv = invoice(db, "INV-1003")
    owed = inv.balance_due
    day = _tomorrow(app, 3)
    _response, pid = pay(client, [inv], method(db, "4242").public_id, scheduled_for=day.isoformat())
    page = client.get(f"/portal/payments/{pid}").get_data(as_text=True)
    assert "scheduled for" in page and "Cancel scheduled payment" in page
    assert payment(db, pid).status is PaymentStatus.SCHEDULED
    assert invoice(db, "INV-1003").status is InvoiceStatus.OPEN  # nothing taken yet
    # The amount is held: paying the same invoice now is refused.
    assert client.get(f"/portal/payment?invoice={inv.public_id}").status_code == 409
    queued = app.extensions["portal.jobs"].pending()
    assert [name for _when, name in queued] == ["run_scheduled_payment"]
    assert queued[0][0].date() == day
    app.extensions["portal.clock"].advance(timedelta(days=1))
    run_jobs(app)
    assert payment(db, pid).status is PaymentStatus.SCHEDULED  # not its day yet
    app.extensions["portal.clock"].advance(timedelta(days=2, hours=7))
    run_jobs(app)
    run_jobs(app)
    done = payment(db, pid)
    assert done.status is PaymentStatus.SUCCEEDED
    assert invoice(db, "INV-1003").paid_by_payments == owed  # CN-301 settled the rest
    assert len(smtp.messages) == 1 and "Receipt" in smtp.messages[0]["Subject"]


def test_a_scheduled_payment_can_be_canceled_before_its_day(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    inv = invoice(db, "INV-1003")
    day = _tomorrow(app, 2)
    _response, pid = pay(client, [inv], method(db, "4242").public_id, scheduled_for=day.isoformat())
    token = csrf_token(client, f"/portal/payments/{pid}")
    canceled = client.post(f"/portal/payments/{pid}/cancel", data={"csrf_token": token})
    assert canceled.status_code == 303
    assert "Scheduled payment canceled." in client.get(f"/portal/payments/{pid}").get_data(
        as_text=True
    )
    again = client.post(f"/portal/payments/{pid}/cancel", data={"csrf_token": token})
    assert again.status_code == 303
    assert "can no longer be canceled" in client.get(f"/portal/payments/{pid}").get_data(
        as_text=True
    )
    assert client.get(f"/portal/payment?invoice={inv.public_id}").status_code == 200  # released
    app.extensions["portal.clock"].advance(timedelta(days=3))
    run_jobs(app)
    assert payment(db, pid).status is PaymentStatus.CANCELED


@pytest.mark.parametrize(
    ("typed", "message"),
    [("2001-01-01", "Choose today or a later date."), ("soon", "Enter a date like 2026-12-31.")],
)
def test_bad_schedule_dates(
    client: FlaskClient, signed_in: Auth, db: Session, typed: str, message: str
) -> None:
    from tests.web.payment_helpers import review

    inv = make_invoice(db, account_named(db, "Acme West"), due=10)
    response = review(client, inv, method(db, "4242").public_id, scheduled_for=typed)
    assert response.status_code == 422 and message in response.get_data(as_text=True)


def test_receipt_page_and_pdf(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    inv = make_invoice(db, account_named(db, "Acme West"), "1234.56", number="INV-7781")
    _response, pid = pay(client, [inv], method(db, "4242").public_id)
    done = payment(db, pid)
    page = client.get(f"/portal/payments/{pid}").get_data(as_text=True)
    assert f"Receipt {done.receipt_number}" in page and "Visa ending 4242" in page
    assert "INV-7781" in page and "Download receipt (PDF)" in page
    pdf = client.get(f"/portal/payments/{pid}/receipt.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
    assert done.receipt_number in text and "INV-7781" in text and "Visa ending 4242" in text
    assert "1,234.56" in text


def test_history_filters_and_csv(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    inv = make_invoice(db, account_named(db, "Acme West"), "120.00", number="INV-7782")
    _response, pid = pay(client, [inv], method(db, "4242").public_id)
    made = payment(db, pid)
    page = client.get("/portal/payment-history").get_data(as_text=True)
    assert f">{made.reference}</a>" in page
    assert "badge-failed" in page and "badge-processing" in page  # from the demo history
    failed = client.get("/portal/payment-history?status=failed").get_data(as_text=True)
    assert "badge-failed" in failed and "badge-succeeded" not in failed
    future = client.get("/portal/payment-history?from=2099-01-01").get_data(as_text=True)
    assert "No payments match these filters" in future
    bad = client.get("/portal/payment-history?from=someday").get_data(as_text=True)
    assert "Enter a date like 2026-12-31." in bad
    export = client.get("/portal/payment-history.csv?status=succeeded")
    assert export.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert rows and {r["status"] for r in rows} == {"succeeded"}
    mine = next(r for r in rows if r["payment_id"] == pid)
    assert mine["receipt_number"] == mine["reference"] == made.reference
    assert mine["billing_account"] == "Acme West"
    assert mine["amount"] == f"{made.amount / 100:.2f}" and mine["method"] == "Visa ending 4242"
    assert mine["invoices"] == "INV-7782=120.00"


def test_the_sandbox_charge_record_holds_no_card_data(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    inv = make_invoice(db, account_named(db, "Acme West"), "120.00")
    _response, pid = pay(client, [inv], method(db, "4242").public_id)
    with tenancy.system(db):
        charge = db.scalars(
            select(SandboxCharge).where(
                SandboxCharge.reference == payment(db, pid).gateway_reference
            )
        ).one()
    assert charge.amount == payment(db, pid).amount and charge.status == "succeeded"


def test_no_card_number_or_security_code_reaches_the_database_or_logs(
    app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    connection: Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every sandbox card through the hosted page, payments with each, a bank debit settled."""
    from tests.card_data import card_numbers_in, leaks, text_values
    from tests.web.test_payment_methods import fill_card

    caplog.set_level(logging.DEBUG)
    cvc = "9731"
    numbers = [
        "4242 4242 4242 4242",
        "4000 0000 0000 0002",
        "4000 0000 0000 9995",
        "4000 0000 0000 0341",
        "5555 5555 5555 4444",  # refused: not a sandbox number
    ]
    for number in numbers:
        fill_card(client, start_setup(client), number=number, cvc=cvc)
    bank = _bank(client, db)
    west = account_named(db, "Acme West")
    owed = [make_invoice(db, west, "120.00") for _ in range(3)]
    _ok, good = pay(client, [owed[0]], method(db, "4242").public_id)
    _bad, failed = pay(client, [owed[1]], method(db, "0341").public_id)
    _debit, settled = pay(client, [owed[2]], bank)
    app.extensions["portal.clock"].advance(timedelta(seconds=5))
    run_jobs(app)
    statuses = [payment(db, pid).status for pid in (good, failed, settled)]
    assert statuses == [PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.SUCCEEDED]
    assert card_numbers_in("card 4242 4242 4242 4242 and 4000-0000-0000-0341")  # the scan works
    secrets = [n.replace(" ", "") for n in numbers] + ["000123456789", f"cvc={cvc}"]
    found = leaks(connection, secrets, caplog.text)
    assert found == []
    scanned = {name for name, _column, _value in text_values(connection)}
    assert {"sandbox_methods", "payment_methods", "payments", "audit_events"} <= scanned
