"""Under PAYMENT_GATEWAY=stripe, what was made with the sandbox stays the sandbox's: its
payments are never asked about at Stripe, its saved cards are never offered nor accepted, and a
scheduled payment on one fails on its day with its payer told, rather than never happening."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import InvoiceStatus, Payment, PaymentStatus
from tests.conftest import Auth, csrf_token, smtp_server, user_by_email
from tests.factories import account_named, make_invoice, make_payment
from tests.stripe_stub import StripeStub
from tests.web.payment_helpers import (
    invoice,
    open_form,
    pay,
    payment,
    run_jobs,
    saved_with,
    submit,
)
from tests.web.stripe.test_stripe_payments import add_card
from workers import jobs

LEFT_ALONE = re.compile(
    r"^(\d+) processing payments belong to gateway sandbox, not stripe: left alone$"
)
FAILED_DUE = re.compile(r"^(\d+) scheduled payments due belong to gateway sandbox, not stripe: ")


def _mentioning_sandbox(stub: StripeStub) -> list[str]:
    """Every API request that names a sandbox id (its charges and cards all start so)."""
    return [f"{r.method} {r.path}" for r in stub.api_requests if "sandbox" in r.path + r.body]


def _logged(caplog: pytest.LogCaptureFixture, pattern: re.Pattern[str]) -> list[int]:
    found = (pattern.match(r.getMessage()) for r in caplog.records if r.name == "workers.jobs")
    return [int(match.group(1)) for match in found if match]


def test_the_sweep_asks_stripe_about_its_payments_only(
    stripe_app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    stub: StripeStub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = stripe_app.extensions["portal.clock"]
    card = add_card(client, stub, "4242424242424242", db)
    stub.fail_next(3, status=500)  # the charge's answer is lost: it stays processing
    _response, pid = pay(client, [invoice(db, "INV-1012")], card.public_id)
    sandbox_card = saved_with(db, "sandbox")[0]
    inv = make_invoice(db, account_named(db, "Acme West"), "80.00")
    left = make_payment(
        db, inv, status=PaymentStatus.PROCESSING, method=sandbox_card, when=clock.now()
    )
    sandbox_reference = left.gateway_reference
    assert sandbox_reference and sandbox_reference.startswith("sandbox_ch_")
    clock.advance(timedelta(minutes=3))
    with caplog.at_level(logging.WARNING, logger="workers.jobs"), stripe_app.app_context():
        assert jobs.reconcile_payments() >= 1
        jobs.reconcile_payments()  # a second sweep: reported again, still not asked
    assert payment(db, pid).status is PaymentStatus.SUCCEEDED  # Stripe's own was asked
    key = payment(db, pid).idempotency_key
    assert len([r for r in stub.api_requests if r.idempotency_key == key]) >= 2
    assert _mentioning_sandbox(stub) == []
    untouched = payment(db, left.public_id)
    assert untouched.status is PaymentStatus.PROCESSING
    assert untouched.gateway_reference == sandbox_reference
    counts = _logged(caplog, LEFT_ALONE)
    assert len(counts) == 2 and all(count >= 1 for count in counts)  # one line per sweep


def test_a_due_scheduled_payment_on_a_sandbox_card_fails_and_its_payer_hears(
    stripe_app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    stub: StripeStub,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = stripe_app.extensions["portal.clock"]
    admin = user_by_email(db, "admin@acme.test")
    inv = make_invoice(db, account_named(db, "Acme West"), "75.00")
    owed = inv.balance_due
    due = make_payment(
        db,
        inv,
        status=PaymentStatus.SCHEDULED,
        method=saved_with(db, "sandbox")[0],
        user=admin,
        scheduled_for=clock.today(),
    )
    with (
        smtp_server(stripe_app, monkeypatch) as inbox,
        caplog.at_level(logging.WARNING, logger="workers.jobs"),
        stripe_app.app_context(),
    ):
        assert jobs.run_due_payments() >= 1
        run_jobs(stripe_app)  # the result mail
    failed = payment(db, due.public_id)
    assert failed.status is PaymentStatus.FAILED
    assert failed.failure_code == "payment_method_unavailable"
    assert [r for r in stub.api_requests if r.idempotency_key == due.idempotency_key] == []
    assert _mentioning_sandbox(stub) == []
    assert invoice(db, inv.number).status is InvoiceStatus.PAYMENT_FAILED  # free to pay again
    assert invoice(db, inv.number).balance_due == owed
    assert len(_logged(caplog, FAILED_DUE)) == 1
    mails = [m for m in inbox.messages if m["To"] == "admin@acme.test"]
    assert len(mails) == 1 and mails[0]["Subject"].startswith("Payment failed")
    assert (
        "this payment method is no longer available" in mails[0].get_payload(decode=True).decode()
    )
    page = client.get(f"/portal/payments/{due.public_id}").get_data(as_text=True)
    assert "this payment method is no longer available" in page


def test_the_form_and_the_methods_page_offer_stripe_methods_only(
    client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    card = add_card(client, stub, "4242424242424242", db)
    sandbox_ids = [m.public_id for m in saved_with(db, "sandbox")]
    assert sandbox_ids  # the demo's cards, saved with the sandbox
    form, _key, _token = open_form(client, invoice(db, "INV-1003").public_id)
    listing = client.get("/portal/payment-methods").get_data(as_text=True)
    for page in (form, listing):
        assert card.public_id in page
        assert [pid for pid in sandbox_ids if pid in page] == []


def test_a_sandbox_method_is_refused_like_an_unknown_one(
    client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    add_card(client, stub, "4242424242424242", db)
    sandbox_card = saved_with(db, "sandbox")[0]
    inv = invoice(db, "INV-1003")
    answers = {}
    for method_id in (sandbox_card.public_id, "pm_nosuchmethod000"):
        for action in ("review", "confirm"):
            _page, key, token = open_form(client, inv.public_id)
            sent = submit(client, [inv], key=key, token=token, action=action, method_id=method_id)
            answers[method_id, action] = sent.status_code
            assert "Choose how to pay." in sent.get_data(as_text=True)
            with tenancy.system(db):
                made = db.scalar(
                    select(func.count()).select_from(Payment).where(Payment.idempotency_key == key)
                )
            assert made == 0
        token = csrf_token(client, "/portal/payment-methods")
        for verb in ("remove", "default"):
            posted = client.post(
                f"/portal/payment-methods/{method_id}/{verb}", data={"csrf_token": token}
            )
            answers[method_id, verb] = posted.status_code
    assert set(answers.values()) == {404, 422}
    for verb in ("review", "confirm", "remove", "default"):
        assert answers[sandbox_card.public_id, verb] == answers["pm_nosuchmethod000", verb]
    assert [m.public_id for m in saved_with(db, "sandbox")].count(sandbox_card.public_id) == 1
