"""Every PaymentIntent status Stripe documents, on every path that reads one: the signed
webhook, the return from 3-D Secure, and the reconciliation. None is ever a 500.

A payment waits for 3-D Secure (the card 4000 0025 0000 3155); then Stripe's PaymentIntent is
put in each status, as Stripe could report it (events arrive out of order; an intent can be
confirmed or captured elsewhere).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.models import PaymentStatus
from tests.conftest import Auth
from tests.stripe_stub import StripeStub
from tests.web.payment_helpers import invoice, pay, payment
from tests.web.stripe.helpers import SECRET_KEY, WEBHOOK_SECRET, deliver

# What the portal's payment becomes when Stripe reports each status.
OUTCOME = {
    "requires_payment_method": PaymentStatus.FAILED,
    "requires_confirmation": PaymentStatus.PROCESSING,
    "requires_action": PaymentStatus.PROCESSING,
    "processing": PaymentStatus.PROCESSING,
    "requires_capture": PaymentStatus.PROCESSING,
    "canceled": PaymentStatus.FAILED,
    "succeeded": PaymentStatus.SUCCEEDED,
}


@pytest.fixture(scope="module")
def card_3ds(stub: StripeStub) -> tuple[str, str]:
    """A Stripe customer with a saved card that asks for 3-D Secure: (customer, method), made
    once through Checkout for the whole module."""
    from urllib.parse import parse_qs, urlsplit

    from portal.gateways.stripe import StripeGateway
    from portal.models import PaymentMethodKind

    with StripeGateway(SECRET_KEY, WEBHOOK_SECRET, api_base=stub.url) as gateway:
        customer = gateway.ensure_customer(
            existing=None, company_ref="statuses", company_name="Acme Corp"
        )
        hosted = gateway.start_setup(
            customer=customer,
            kind=PaymentMethodKind.CARD,
            return_url="https://portal.example/return",
            cancel_url="https://portal.example/",
        )
        back = stub.complete_checkout(hosted.rsplit("/", 1)[1], "4000002500003155")
        session_id = parse_qs(urlsplit(back).query)["session_id"][0]
        saved = gateway.finish_setup(customer=customer, session_id=session_id)
    assert saved is not None
    return customer, saved.token


def _waiting_payment(
    stripe_app: Flask,
    client: FlaskClient,
    db: Session,
    stub: StripeStub,
    card_3ds: tuple[str, str],
) -> tuple[str, str]:
    """A payment waiting for 3-D Secure: (its public id, its PaymentIntent id)."""
    from sqlalchemy import select, update

    from portal import tenancy
    from portal.models import Company, Payment, PaymentMethod, PaymentMethodKind

    customer, token = card_3ds
    with tenancy.system(db):
        acme = db.scalars(select(Company).where(Company.name == "Acme Corp")).one()
        db.execute(
            update(Company).where(Company.id == acme.id).values(gateway_customer_id=customer)
        )
        card = PaymentMethod(
            company_id=acme.id,
            gateway="stripe",
            gateway_token=token,
            kind=PaymentMethodKind.CARD,
            brand="visa",
            last4="3155",
            exp_month=12,
            exp_year=2040,
        )
        db.add(card)
        db.commit()
    Auth(stripe_app, client).sign_in()
    response, _pid = pay(client, [invoice(db, "INV-1003")], card.public_id)
    intent_id = response.headers["Location"].rsplit("/", 1)[1]
    with tenancy.system(db):
        pid = db.scalars(select(Payment.public_id).where(Payment.gateway_reference == intent_id))
        return pid.one(), intent_id


def _put(stub: StripeStub, intent_id: str, status: str) -> dict[str, Any]:
    intent = stub.payment_intents[intent_id]
    intent["status"] = status
    if status != "requires_action":
        intent["next_action"] = None
    if status == "requires_payment_method":
        intent["last_payment_error"] = {"type": "card_error", "code": "card_declined"}
    return intent


@pytest.mark.parametrize("status", OUTCOME)
def test_a_signed_event_in_any_status_is_applied(
    stripe_app: Flask,
    client: FlaskClient,
    db: Session,
    stub: StripeStub,
    card_3ds: tuple[str, str],
    status: str,
) -> None:
    pid, intent_id = _waiting_payment(stripe_app, client, db, stub, card_3ds)
    raw, signature = stub.event("payment_intent.processing", _put(stub, intent_id, status))
    code, outcome = deliver(client, raw, signature)
    assert code == 200 and outcome in {"applied", "unchanged"}
    assert payment(db, pid).status is OUTCOME[status]


@pytest.mark.parametrize("status", OUTCOME)
def test_the_return_from_authentication_in_any_status(
    stripe_app: Flask,
    client: FlaskClient,
    db: Session,
    stub: StripeStub,
    card_3ds: tuple[str, str],
    status: str,
) -> None:
    pid, intent_id = _waiting_payment(stripe_app, client, db, stub, card_3ds)
    _put(stub, intent_id, status)
    back = client.get(f"/portal/payments/{pid}/return?payment_intent={intent_id}")
    assert back.status_code == 303 and back.headers["Location"] == f"/portal/payments/{pid}"
    assert payment(db, pid).status is OUTCOME[status]
    page = client.get(f"/portal/payments/{pid}")
    assert page.status_code == 200


# Asked again once the time allowed for the customer has passed: whatever only the customer or
# the portal could move on is given up (the intent is cancelled at Stripe, the payment fails and
# its invoice is free again); a debit still clearing is left to clear.
RECONCILED = {
    **OUTCOME,
    "requires_confirmation": PaymentStatus.FAILED,
    "requires_action": PaymentStatus.FAILED,
    "requires_capture": PaymentStatus.FAILED,
}


@pytest.mark.parametrize("status", RECONCILED)
def test_the_reconciliation_in_any_status(
    stripe_app: Flask,
    client: FlaskClient,
    db: Session,
    stub: StripeStub,
    card_3ds: tuple[str, str],
    status: str,
) -> None:
    from workers import jobs

    pid, intent_id = _waiting_payment(stripe_app, client, db, stub, card_3ds)
    _put(stub, intent_id, status)
    # Past the time allowed for authentication (30 min), counted as the sweep counts it.
    stripe_app.extensions["portal.clock"].advance(timedelta(minutes=33))
    with stripe_app.app_context():
        assert jobs.reconcile_payments() >= 1  # this one (and any of the demo data's)
    assert payment(db, pid).status is RECONCILED[status]
    gave_up = RECONCILED[status] is not OUTCOME[status]
    assert (stub.payment_intents[intent_id]["status"] == "canceled") == (
        gave_up or status == "canceled"
    )
    if RECONCILED[status] is PaymentStatus.FAILED:
        assert invoice(db, "INV-1003").status.value == "payment_failed"
