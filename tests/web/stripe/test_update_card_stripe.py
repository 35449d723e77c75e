"""Updating a card on Stripe: Checkout in setup mode for the new one, the old one detached at
Stripe after the portal committed the replacement (the real SDK against tests/stripe_stub.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import PaymentMethod
from tests.conftest import Auth, csrf_token
from tests.stripe_stub import StripeStub
from tests.web.payment_helpers import audit_events
from tests.web.stripe.test_stripe_payments import add_card


def test_update_a_card_on_checkout_replaces_it_and_detaches_the_old(
    client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    old = add_card(client, stub, "4242424242424242", db)
    token = csrf_token(client, "/portal/payment-methods")
    page = client.get("/portal/payment-methods").get_data(as_text=True)
    assert f"/portal/payment-methods/{old.public_id}/update" in page
    response = client.post(
        f"/portal/payment-methods/{old.public_id}/update", data={"csrf_token": token}
    )
    assert response.status_code == 303
    hosted = response.headers["Location"]
    assert hosted.startswith(f"{stub.url}/checkout/cs_test_")
    session_id = hosted.rsplit("/", 1)[1]
    back = urlsplit(stub.complete_checkout(session_id, "5555555555554444"))
    assert back.path == f"/portal/payment-methods/{old.public_id}/updated"
    landed = client.get(f"{back.path}?{back.query}")
    assert landed.status_code == 303
    with tenancy.system(db):
        rows = list(
            db.scalars(
                select(PaymentMethod)
                .where(PaymentMethod.gateway == "stripe")
                .execution_options(populate_existing=True)
            )
        )
    gone = next(m for m in rows if m.id == old.id)
    new = next(m for m in rows if m.last4 == "4444")
    assert gone.removed_at is not None and new.removed_at is None
    assert new.gateway_token.startswith("pm_") and new.brand == "mastercard"
    assert stub.payment_methods[old.gateway_token]["customer"] is None  # detached at Stripe
    assert stub.payment_methods[new.gateway_token]["customer"] is not None
    [event] = audit_events(db, "Portal.PaymentMethodReplaced")
    assert event.properties["new_method_id"] == new.public_id


def test_canceling_checkout_changes_nothing(
    client: FlaskClient, signed_in: Auth, db: Session, stub: StripeStub
) -> None:
    old = add_card(client, stub, "4242424242424242", db)
    token = csrf_token(client, "/portal/payment-methods")
    client.post(f"/portal/payment-methods/{old.public_id}/update", data={"csrf_token": token})
    landed = client.get(f"/portal/payment-methods/{old.public_id}/updated")  # Checkout's cancel
    assert landed.status_code == 303
    assert "The card was not updated." in client.get("/portal/payment-methods").get_data(
        as_text=True
    )
    assert stub.payment_methods[old.gateway_token]["customer"] is not None
