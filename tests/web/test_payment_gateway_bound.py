"""Under the sandbox gateway, what was made with Stripe stays Stripe's: its payments are never
handed to the sandbox, its saved methods are never offered nor accepted, and a scheduled
payment on one fails on its day with its payer told. (The Stripe side of the same rules:
tests/web/stripe/test_stripe_gateway_bound.py.)"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.gateways import ChargeRequest, ChargeResult
from portal.gateways.sandbox import SandboxGateway
from portal.models import InvoiceStatus, Payment, PaymentMethod, PaymentStatus
from tests.conftest import Auth, Inbox, csrf_token, user_by_email
from tests.factories import account_named, company_named, make_invoice, make_payment
from tests.factories import make_payment_method as make_method
from tests.web.payment_helpers import (
    as_gateway,
    invoice,
    open_form,
    payment,
    run_jobs,
    saved_with,
    submit,
)
from workers import jobs

LEFT_ALONE = re.compile(
    r"^(\d+) processing payments belong to gateway stripe, not sandbox: left alone$"
)
FAILED_DUE = re.compile(r"^(\d+) scheduled payments due belong to gateway stripe, not sandbox: ")


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What the sandbox gateway is asked about: references retrieved, tokens charged."""
    seen: list[str] = []
    retrieve, charge = SandboxGateway.retrieve, SandboxGateway.charge

    def spy_retrieve(self: SandboxGateway, reference: str) -> ChargeResult:
        seen.append(reference)
        return retrieve(self, reference)

    def spy_charge(self: SandboxGateway, request: ChargeRequest) -> ChargeResult:
        seen.append(request.token)
        return charge(self, request)

    monkeypatch.setattr(SandboxGateway, "retrieve", spy_retrieve)
    monkeypatch.setattr(SandboxGateway, "charge", spy_charge)
    yield seen


def _stripe_method(db: Session) -> PaymentMethod:
    method = make_method(db, company_named(db, "Acme Corp"), last4="4444")
    as_gateway(db, "stripe", method)
    return method


def _logged(caplog: pytest.LogCaptureFixture, pattern: re.Pattern[str]) -> list[int]:
    found = (pattern.match(r.getMessage()) for r in caplog.records if r.name == "workers.jobs")
    return [int(match.group(1)) for match in found if match]


def test_the_sweep_hands_the_sandbox_its_payments_only(
    app: Flask, db: Session, asked: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    clock = app.extensions["portal.clock"]
    account = account_named(db, "Acme West")
    card = saved_with(db, "sandbox")[0]
    ours = make_payment(
        db, make_invoice(db, account, "40.00"), status=PaymentStatus.PROCESSING,
        method=card, when=clock.now(),
    )  # fmt: skip
    theirs = make_payment(
        db, make_invoice(db, account, "60.00"), status=PaymentStatus.PROCESSING,
        method=_stripe_method(db), when=clock.now(),
    )  # fmt: skip
    as_gateway(db, "stripe", theirs)
    stripe_reference = theirs.gateway_reference
    assert stripe_reference and stripe_reference.startswith("pi_")
    clock.advance(timedelta(minutes=3))
    with caplog.at_level(logging.WARNING, logger="workers.jobs"), app.app_context():
        jobs.reconcile_payments()
    assert ours.gateway_reference in asked  # the sandbox's own was asked about
    assert stripe_reference not in asked
    assert [token for token in asked if token.startswith("pi_") or token.startswith("pm_")] == []
    untouched = payment(db, theirs.public_id)
    assert untouched.status is PaymentStatus.PROCESSING
    assert untouched.gateway_reference == stripe_reference
    assert _logged(caplog, LEFT_ALONE) == [1]  # the seed's payments are all the sandbox's


def test_a_due_scheduled_payment_on_a_stripe_method_fails_and_its_payer_hears(
    app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    asked: list[str],
    smtp: Inbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = app.extensions["portal.clock"]
    method = _stripe_method(db)
    inv = make_invoice(db, account_named(db, "Acme West"), "75.00")
    due = make_payment(
        db,
        inv,
        status=PaymentStatus.SCHEDULED,
        method=method,
        user=user_by_email(db, "admin@acme.test"),
        scheduled_for=clock.today(),
    )
    as_gateway(db, "stripe", due)
    with caplog.at_level(logging.WARNING, logger="workers.jobs"), app.app_context():
        assert jobs.run_due_payments() >= 1
        run_jobs(app)  # the result mail
    failed = payment(db, due.public_id)
    assert failed.status is PaymentStatus.FAILED
    assert failed.failure_code == "payment_method_unavailable"
    assert method.gateway_token not in asked
    assert invoice(db, inv.number).status is InvoiceStatus.PAYMENT_FAILED
    assert _logged(caplog, FAILED_DUE) == [1]
    assert len(smtp.messages) == 1 and smtp.messages[0]["Subject"].startswith("Payment failed")
    page = client.get(f"/portal/payments/{due.public_id}").get_data(as_text=True)
    assert "this payment method is no longer available" in page


def test_a_scheduled_payment_on_a_stripe_method_is_left_before_its_day(
    app: Flask, db: Session, asked: list[str]
) -> None:
    clock = app.extensions["portal.clock"]
    inv = make_invoice(db, account_named(db, "Acme West"), "75.00")
    later = make_payment(
        db, inv, status=PaymentStatus.SCHEDULED, method=_stripe_method(db),
        scheduled_for=clock.today() + timedelta(days=2),
    )  # fmt: skip
    as_gateway(db, "stripe", later)
    with app.app_context():
        assert jobs.run_scheduled_payment(later.id) == "scheduled"
    assert payment(db, later.public_id).status is PaymentStatus.SCHEDULED
    assert asked == []


def test_the_form_and_the_methods_page_offer_sandbox_methods_only(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    theirs = _stripe_method(db)
    ours = saved_with(db, "sandbox")
    assert ours
    form, _key, _token = open_form(client, invoice(db, "INV-1003").public_id)
    listing = client.get("/portal/payment-methods").get_data(as_text=True)
    for page in (form, listing):
        assert all(method.public_id in page for method in ours)
        assert theirs.public_id not in page


def test_a_stripe_method_is_refused_like_an_unknown_one(
    client: FlaskClient, signed_in: Auth, db: Session, asked: list[str]
) -> None:
    theirs = _stripe_method(db)
    inv = invoice(db, "INV-1003")
    answers = {}
    for method_id in (theirs.public_id, "pm_nosuchmethod000"):
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
        assert answers[theirs.public_id, verb] == answers["pm_nosuchmethod000", verb]
    assert theirs.public_id in [m.public_id for m in saved_with(db, "stripe")]  # not removed
    assert asked == []
