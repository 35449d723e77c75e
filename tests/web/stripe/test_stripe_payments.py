"""The Stripe path end to end: the real stripe SDK against a local Stripe stub.

Methods are added on Stripe's hosted Checkout page (setup mode), charges are PaymentIntents with
the payment's idempotency key, 3-D Secure sends the customer to Stripe and back, and webhooks
are signed as Stripe signs them.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import InvoiceStatus, PaymentMethod, PaymentStatus
from tests.conftest import Auth, csrf_token
from tests.factories import account_named, make_invoice
from tests.stripe_stub import StripeStub, card_numbers_in
from tests.web.payment_helpers import invoice, pay, payment
from tests.web.stripe.helpers import deliver


def add_card(client: FlaskClient, stub: StripeStub, number: str, db: Session) -> PaymentMethod:
    token = csrf_token(client, "/portal/payment-methods")
    response = client.post(
        "/portal/payment-methods/new", data={"csrf_token": token, "kind": "card"}
    )
    assert response.status_code == 303
    hosted = response.headers["Location"]
    assert hosted.startswith(f"{stub.url}/checkout/cs_test_")  # Stripe's page, not ours
    session_id = hosted.rsplit("/", 1)[1]
    back = urlsplit(stub.complete_checkout(session_id, number))
    landed = client.get(f"{back.path}?{back.query}")
    assert landed.status_code == 303
    with tenancy.system(db):
        return db.scalars(
            select(PaymentMethod)
            .where(PaymentMethod.gateway == "stripe", PaymentMethod.last4 == number[-4:])
            .order_by(PaymentMethod.id.desc())
        ).first()  # type: ignore[return-value]


def test_the_sandbox_page_is_not_served_with_stripe(client: FlaskClient) -> None:
    assert client.get("/sandbox/setup/anything").status_code == 404


def test_add_a_card_on_checkout_and_pay(
    client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    card = add_card(client, stub, "4242424242424242", db)
    assert card.gateway_token.startswith("pm_") and card.brand == "visa"
    inv = make_invoice(db, account_named(db, "Acme West"), "120.00")
    _response, pid = pay(client, [inv], card.public_id)
    made = payment(db, pid)
    assert made.status is PaymentStatus.SUCCEEDED and made.gateway_reference.startswith("pi_")
    assert invoice(db, inv.number).status is InvoiceStatus.PAID
    intent = stub.payment_intents[made.gateway_reference]
    assert intent["amount"] == made.amount and intent["customer"].startswith("cus_")
    sent = [r for r in stub.api_requests if r.path == "/v1/payment_intents" and r.method == "POST"]
    assert sent[-1].idempotency_key == made.idempotency_key
    assert list(card_numbers_in(stub.api_requests)) == []  # no card number ever sent by us


def test_a_declining_card_fails_the_payment(
    client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    card = add_card(client, stub, "4000000000000341", db)
    _response, pid = pay(client, [invoice(db, "INV-1002")], card.public_id)
    failed = payment(db, pid)
    assert failed.status is PaymentStatus.FAILED and failed.failure_code == "card_declined"
    page = client.get(f"/portal/payments/{pid}").get_data(as_text=True)
    assert "Payment failed: your card was declined" in page


@pytest.mark.parametrize("approve", [True, False])
def test_three_d_secure_sends_the_customer_to_stripe_and_back(
    client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub, approve: bool
) -> None:
    card = add_card(client, stub, "4000002500003155", db)
    response, _pid = pay(client, [invoice(db, "INV-1003")], card.public_id)
    action = response.headers["Location"]
    assert action.startswith(f"{stub.url}/3ds/pi_")
    intent_id = action.rsplit("/", 1)[1]
    with tenancy.system(db):
        from portal.models import Payment

        made = db.scalars(select(Payment).where(Payment.gateway_reference == intent_id)).one()
        pid = made.public_id
    waiting = client.get(f"/portal/payments/{pid}").get_data(as_text=True)
    assert "Confirm with your bank" in waiting and action in waiting
    back = urlsplit(stub.complete_3ds(intent_id, approve=approve))
    assert back.path == f"/portal/payments/{pid}/return"
    returned = client.get(f"{back.path}?{back.query}")
    assert returned.headers["Location"] == f"/portal/payments/{pid}"
    final = payment(db, pid)
    if approve:
        assert final.status is PaymentStatus.SUCCEEDED and final.action_url is None
    else:
        assert final.status is PaymentStatus.FAILED
        assert final.failure_code == "authentication_required"


def test_three_d_secure_in_a_group_comes_back_to_the_groups_page(
    client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    """Invoices of two accounts with a card whose bank asks every time: the customer confirms
    the first, lands on the group's page, confirms the second there and comes back again."""
    from tests.web.payment_helpers import open_form, submit

    card = add_card(client, stub, "4000002500003155", db)
    west, east = invoice(db, "INV-1003"), invoice(db, "INV-2003")
    _page, key, token = open_form(client, west.public_id, east.public_id)
    confirmed = submit(
        client, [west, east], key=key, token=token, action="confirm", method_id=card.public_id
    )
    first_action = confirmed.headers["Location"]
    assert first_action.startswith(f"{stub.url}/3ds/pi_")
    with tenancy.system(db):
        from portal.models import Payment, PaymentGroup

        group = db.scalars(select(PaymentGroup)).one()
        made = db.scalars(
            select(Payment).where(Payment.group_id == group.id).order_by(Payment.id)
        ).all()
        assert len(made) == 2 and all(p.action_url for p in made)
        assert first_action == made[0].action_url
    group_page = f"/portal/payments/group/{group.public_id}"
    waiting = client.get(group_page).get_data(as_text=True)
    assert waiting.count("Confirm with your bank") == 2
    for payment_row in made:
        back = urlsplit(stub.complete_3ds(payment_row.gateway_reference))
        assert back.path == f"/portal/payments/{payment_row.public_id}/return"
        returned = client.get(f"{back.path}?{back.query}")
        assert returned.headers["Location"] == group_page
    done = client.get(group_page).get_data(as_text=True)
    assert "processed successfully" in done and "Confirm with your bank" not in done
    assert [payment(db, p.public_id).status for p in made] == [PaymentStatus.SUCCEEDED] * 2


def test_stripe_webhooks_verify_and_apply_once(
    stripe_app: Flask, client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    hosted_token = csrf_token(client, "/portal/payment-methods")
    response = client.post(
        "/portal/payment-methods/new", data={"csrf_token": hosted_token, "kind": "bank_account"}
    )
    session_id = response.headers["Location"].rsplit("/", 1)[1]
    back = urlsplit(stub.complete_checkout(session_id))
    client.get(f"{back.path}?{back.query}")
    with tenancy.system(db):
        bank = db.scalars(
            select(PaymentMethod).where(
                PaymentMethod.gateway == "stripe", PaymentMethod.brand == "bank"
            )
        ).one()
    inv = invoice(db, "INV-1004")
    owed = inv.balance_due
    _response, pid = pay(client, [inv], bank.public_id)
    made = payment(db, pid)
    assert made.status is PaymentStatus.PROCESSING
    intent = stub.settle(made.gateway_reference)
    raw, signature = stub.event("payment_intent.succeeded", intent)

    assert deliver(client, raw, "t=1,v1=bad") == (400, "")
    assert [deliver(client, raw, signature) for _ in range(3)] == [
        (200, "applied"),
        (200, "duplicate"),
        (200, "duplicate"),
    ]
    late_raw, late_sig = stub.event("payment_intent.processing", {**intent, "status": "processing"})
    assert deliver(client, late_raw, late_sig) == (200, "unchanged")
    assert payment(db, pid).status is PaymentStatus.SUCCEEDED
    assert invoice(db, "INV-1004").amount_paid == owed


def test_reconciliation_finds_a_charge_whose_answer_was_lost(
    stripe_app: Flask, client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    card = add_card(client, stub, "4242424242424242", db)
    stub.fail_next(3, status=500)  # the call and both SDK retries fail: it stays processing
    _response, pid = pay(client, [invoice(db, "INV-1012")], card.public_id)
    assert payment(db, pid).status is PaymentStatus.PROCESSING
    stripe_app.extensions["portal.clock"].advance(timedelta(minutes=3))
    from workers import jobs

    with stripe_app.app_context():
        assert jobs.reconcile_payments() >= 1
    done = payment(db, pid)
    assert done.status is PaymentStatus.SUCCEEDED
    charged = [i for i in stub.payment_intents.values() if i["metadata"].get("payment") == pid]
    assert len(charged) == 1  # the same idempotency key: one charge
    key = payment(db, pid).idempotency_key
    bodies = [r.form for r in stub.api_requests if r.idempotency_key == key]
    assert len(bodies) >= 2 and all(b == bodies[0] for b in bodies)  # request and job alike


def test_a_charge_whose_answer_was_lost_is_found_by_its_webhook(
    stripe_app: Flask, client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    card = add_card(client, stub, "4242424242424242", db)
    stub.fail_next(3, status=500)
    inv = invoice(db, "INV-1013")
    owed = inv.balance_due
    _response, pid = pay(client, [inv], card.public_id)
    assert payment(db, pid).gateway_reference is None  # the portal never heard back
    # Stripe did charge, and says so with the portal's payment id in the metadata.
    intent = {
        "id": "pi_lost_answer", "object": "payment_intent", "status": "succeeded",
        "amount": owed, "currency": "usd", "metadata": {"payment": pid},
        "last_payment_error": None, "next_action": None,
    }  # fmt: skip
    raw, signature = stub.event("payment_intent.succeeded", intent)
    assert deliver(client, raw, signature) == (200, "applied")
    done = payment(db, pid)
    assert done.status is PaymentStatus.SUCCEEDED and done.gateway_reference == "pi_lost_answer"
    assert invoice(db, "INV-1013").balance_due == 0


def test_an_event_for_a_payment_not_yet_known_is_not_remembered(
    client: FlaskClient, stub: StripeStub
) -> None:
    intent = {
        "id": "pi_unknown", "object": "payment_intent", "status": "succeeded", "amount": 500,
        "currency": "usd", "metadata": {}, "last_payment_error": None, "next_action": None,
    }  # fmt: skip
    raw, signature = stub.event("payment_intent.succeeded", intent)
    outcomes = [deliver(client, raw, signature) for _ in range(2)]
    assert outcomes == [(200, "ignored")] * 2  # a redelivery could still apply it later


def test_an_abandoned_authentication_is_given_up_and_frees_the_invoice(
    stripe_app: Flask, client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    from workers import jobs

    card = add_card(client, stub, "4000002500003155", db)
    inv = invoice(db, "INV-1003")
    response, _pid = pay(client, [inv], card.public_id)
    intent_id = response.headers["Location"].rsplit("/", 1)[1]
    with tenancy.system(db):
        from portal.models import Payment

        pid = db.scalars(
            select(Payment.public_id).where(Payment.gateway_reference == intent_id)
        ).one()
    page = client.get(f"/portal/payments/{pid}").get_data(as_text=True)
    assert 'data-hx-trigger="load delay:1s"' not in page  # nothing to poll while the bank waits
    clock = stripe_app.extensions["portal.clock"]
    clock.advance(timedelta(minutes=10))
    with stripe_app.app_context():
        jobs.reconcile_payments()
    assert payment(db, pid).status is PaymentStatus.PROCESSING  # still within the time allowed
    clock.advance(timedelta(minutes=30))
    with stripe_app.app_context():
        assert jobs.reconcile_payments() >= 1
    given_up = payment(db, pid)
    assert given_up.status is PaymentStatus.FAILED
    assert given_up.failure_code == "authentication_required"
    assert stub.payment_intents[intent_id]["status"] == "canceled"
    assert invoice(db, "INV-1003").status is InvoiceStatus.PAYMENT_FAILED


def test_a_scheduled_charge_never_waits_for_authentication(
    stripe_app: Flask, client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    from tests.web.payment_helpers import run_jobs

    card = add_card(client, stub, "4000002500003155", db)
    clock = stripe_app.extensions["portal.clock"]
    day = clock.today() + timedelta(days=1)
    _response, pid = pay(
        client, [invoice(db, "INV-1003")], card.public_id, scheduled_for=day.isoformat()
    )
    clock.advance(timedelta(days=1, hours=7))
    run_jobs(stripe_app)
    failed = payment(db, pid)
    assert failed.status is PaymentStatus.FAILED, failed.status
    assert failed.failure_code == "authentication_required"
    sent = [r for r in stub.api_requests if r.path == "/v1/payment_intents" and r.method == "POST"]
    assert sent[-1].form.get("off_session") == "true" and "return_url" not in sent[-1].form


def test_an_event_cannot_take_over_another_charges_payment(
    client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    card = add_card(client, stub, "4000002500003155", db)
    response, _pid = pay(client, [invoice(db, "INV-1003")], card.public_id)
    intent_id = response.headers["Location"].rsplit("/", 1)[1]
    with tenancy.system(db):
        from portal.models import Payment

        waiting = db.scalars(select(Payment).where(Payment.gateway_reference == intent_id)).one()
        pid, amount = waiting.public_id, waiting.amount
    other = {
        "id": "pi_other", "object": "payment_intent", "status": "succeeded", "amount": amount,
        "currency": "usd", "metadata": {"payment": pid}, "last_payment_error": None,
        "next_action": None,
    }  # fmt: skip
    raw, signature = stub.event("payment_intent.succeeded", other)
    assert deliver(client, raw, signature) == (200, "ignored")
    still = payment(db, pid)
    assert still.status is PaymentStatus.PROCESSING and still.gateway_reference == intent_id


def test_a_scheduled_charge_whose_answer_was_lost_is_asked_again(
    stripe_app: Flask, client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    """Counted from the day it was charged, not the day it was scheduled."""
    from tests.web.payment_helpers import run_jobs
    from workers import jobs

    card = add_card(client, stub, "4242424242424242", db)
    clock = stripe_app.extensions["portal.clock"]
    day = clock.today() + timedelta(days=2)
    inv = make_invoice(db, account_named(db, "Acme West"))
    _response, pid = pay(client, [inv], card.public_id, scheduled_for=day.isoformat())
    clock.advance(timedelta(days=2, hours=7))
    stub.fail_next(3, status=500)
    run_jobs(stripe_app)
    assert payment(db, pid).status is PaymentStatus.PROCESSING
    clock.advance(timedelta(minutes=3))
    with stripe_app.app_context():
        assert jobs.reconcile_payments() >= 1
    assert payment(db, pid).status is PaymentStatus.SUCCEEDED
