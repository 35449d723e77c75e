"""Update a card, attacked (review of issue 17): the return address of the hosted page is a GET
that replaces a card; only an update this browser started may do so, so a link a colleague
crafts around their own completed page cannot make an admin's click replace (and forget at the
gateway) the company's card."""

from __future__ import annotations

from flask import Flask
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import Company, SandboxMethod
from tests.conftest import Auth, csrf_token
from tests.factories import make_payment_method
from tests.web.payment_helpers import audit_events, method
from tests.web.test_payment_methods import fill_card
from tests.web.test_update_card import fresh, press_update


def _completed_elsewhere(app: Flask) -> str:
    """A hosted page ap@acme.test completed for a card of their own: its session id."""
    ap = app.test_client()
    Auth(app, ap).sign_in("ap@acme.test")
    token = csrf_token(ap, "/portal/payment-methods")
    hosted = ap.post(
        "/portal/payment-methods/new", data={"csrf_token": token, "kind": "card"}
    ).headers["Location"]
    done = fill_card(ap, hosted, number="4242424242424242")
    return str(done.headers["Location"].rsplit("session_id=", 1)[1])


def test_a_crafted_return_link_does_not_replace_the_admins_card(app: Flask, db: Session) -> None:
    admin_card = method(db, "4242")
    session_id = _completed_elsewhere(app)
    admin = app.test_client()
    Auth(app, admin).sign_in()  # the admin clicks the link they were sent
    answer = admin.get(
        f"/portal/payment-methods/{admin_card.public_id}/updated?session_id={session_id}"
    )
    assert answer.status_code == 303
    assert "The card was not updated." in admin.get("/portal/payment-methods").get_data(
        as_text=True
    )
    assert fresh(db, admin_card.public_id).removed_at is None
    assert audit_events(db, "Portal.PaymentMethodReplaced") == []
    with tenancy.system(db):
        kept = db.get(SandboxMethod, admin_card.gateway_token)
        assert kept is not None and kept.detached_at is None  # not forgotten at the gateway


def test_an_update_started_for_another_card_does_not_replace_this_one(
    app: Flask, db: Session
) -> None:
    """The pending update names its card: a return address naming another is refused, and
    the card it was started for is still updated by its own."""
    visa = method(db, "4242")
    with tenancy.system(db):
        acme = db.get(Company, visa.company_id)
    assert acme is not None
    other = make_payment_method(db, acme, last4="1881")
    db.commit()
    admin = app.test_client()
    Auth(app, admin).sign_in()
    hosted = press_update(admin, visa).headers["Location"]
    done = fill_card(admin, hosted, number="4242424242424242")
    session_id = done.headers["Location"].rsplit("session_id=", 1)[1]
    admin.get(f"/portal/payment-methods/{other.public_id}/updated?session_id={session_id}")
    assert fresh(db, other.public_id).removed_at is None
    assert admin.get(done.headers["Location"]).status_code == 303  # its own: updated
    assert fresh(db, visa.public_id).removed_at is not None
    assert len(audit_events(db, "Portal.PaymentMethodReplaced")) == 1


def test_two_updates_started_in_two_tabs_both_go_through(app: Flask, db: Session) -> None:
    visa = method(db, "4242")
    with tenancy.system(db):
        acme = db.get(Company, visa.company_id)
    assert acme is not None
    other = make_payment_method(db, acme, last4="1881")
    db.commit()
    admin = app.test_client()
    Auth(app, admin).sign_in()
    first = press_update(admin, visa).headers["Location"]
    second = press_update(admin, other).headers["Location"]  # another tab
    done_first = fill_card(admin, first, number="4242424242424242")
    done_second = fill_card(admin, second, number="4242424242424242")
    assert admin.get(done_first.headers["Location"]).status_code == 303
    assert admin.get(done_second.headers["Location"]).status_code == 303
    assert fresh(db, visa.public_id).removed_at is not None
    assert fresh(db, other.public_id).removed_at is not None
    assert len(audit_events(db, "Portal.PaymentMethodReplaced")) == 2
