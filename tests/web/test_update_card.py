"""Cards about to expire: flagged on the dashboard and the methods page, and "Update" through
the gateway's hosted page (the sandbox's here; Stripe's in tests/web/stripe/) putting the new
card in the old one's place in one step: scheduled payments, default, the old one removed."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import (
    AutopaySetting,
    AutopayTiming,
    Payment,
    PaymentMethod,
    PaymentMethodKind,
    PaymentStatus,
    SandboxMethod,
)
from portal.services import autopay
from tests.conftest import Auth, QueryCounter, csrf_token, readable
from tests.factories import company_named, make_payment, make_payment_method
from tests.web.payment_helpers import audit_events, invoice, method
from tests.web.test_payment_methods import fill_card


def text(html: str) -> str:
    """The page's words, tags gone and white space collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", readable(html)).split())


def today(app: Flask) -> date:
    found: date = app.extensions["portal.clock"].today()
    return found


def expire(db: Session, card: PaymentMethod, when: date) -> None:
    with tenancy.system(db):
        card.exp_month, card.exp_year = when.month, when.year
        db.commit()


def fresh(db: Session, public_id: str) -> PaymentMethod:
    with tenancy.system(db):
        return db.scalars(
            select(PaymentMethod)
            .where(PaymentMethod.public_id == public_id)
            .execution_options(populate_existing=True)
        ).one()


def methods_of(db: Session, company_id: int) -> list[PaymentMethod]:
    with tenancy.system(db):
        return list(
            db.scalars(
                select(PaymentMethod)
                .where(PaymentMethod.company_id == company_id, PaymentMethod.removed_at.is_(None))
                .execution_options(populate_existing=True)
            )
        )


def on_method(db: Session, ids: list[int]) -> dict[int, int | None]:
    with tenancy.system(db):
        rows = db.execute(
            select(Payment.id, Payment.payment_method_id)
            .where(Payment.id.in_(ids))
            .execution_options(populate_existing=True)
        )
        return {pid: mid for pid, mid in rows}


def press_update(client: FlaskClient, card: PaymentMethod, next_url: str = "") -> Any:
    token = csrf_token(client, next_url or "/portal/payment-methods")
    data = {"csrf_token": token}
    if next_url:
        data["next"] = next_url
    return client.post(f"/portal/payment-methods/{card.public_id}/update", data=data)


def test_the_dashboard_flags_the_cards_the_user_may_manage(
    app: Flask, client: FlaskClient, auth: Auth, db: Session
) -> None:
    visa, failing = method(db, "4242"), method(db, "0341")
    expire(db, visa, today(app) + timedelta(days=20))
    expire(db, failing, today(app) - timedelta(days=40))
    auth.sign_in("admin@acme.test")
    page = text(client.get("/portal/dashboard").get_data(as_text=True))
    assert "Cards to update" in page
    soon = today(app) + timedelta(days=20)
    gone = today(app) - timedelta(days=40)
    assert f"Visa ending 4242 expires {soon.month:02d}/{soon.year}" in page
    assert f"Visa ending 0341 expired {gone.month:02d}/{gone.year}" in page
    html = client.get("/portal/dashboard").get_data(as_text=True)
    assert f'action="/portal/payment-methods/{visa.public_id}/update"' in html
    listing = text(client.get("/portal/payment-methods").get_data(as_text=True))
    assert "Expires soon" in listing and "Expired" in listing
    # ap@acme.test added neither card: nothing of theirs to update, nothing flagged.
    auth.logout()
    auth.sign_in("ap@acme.test")
    assert "Cards to update" not in client.get("/portal/dashboard").get_data(as_text=True)


def test_cards_far_from_expiry_and_bank_debits_are_not_flagged(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    acme = company_named(db, "Acme Corp")
    bank = make_payment_method(db, acme, last4="6789", expires=(today(app).month, 2000))
    with tenancy.system(db):
        bank.kind, bank.brand = PaymentMethodKind.BANK_ACCOUNT, "bank"
        db.commit()
    page = client.get("/portal/dashboard").get_data(as_text=True)
    assert "Cards to update" not in page


def test_the_dashboard_costs_one_query_more_at_most(
    app: Flask, client: FlaskClient, auth: Auth, db: Session, count_queries: QueryCounter
) -> None:
    expire(db, method(db, "4242"), today(app))
    auth.sign_in()
    count_queries.statements.clear()
    page = client.get("/portal/dashboard").get_data(as_text=True)
    assert "Cards to update" in page
    on_methods = [s for s in count_queries.statements if "FROM payment_methods" in s]
    assert len(on_methods) == 1, on_methods


def _schedule(db: Session, app: Flask, card: PaymentMethod) -> tuple[Payment, Payment, Payment]:
    """Two scheduled payments on `card` (West and East) and one processing."""
    day = today(app) + timedelta(days=5)
    west = make_payment(
        db,
        invoice(db, "INV-1004"),
        "10.00",
        status=PaymentStatus.SCHEDULED,
        method=card,
        scheduled_for=day,
    )
    east = make_payment(
        db,
        invoice(db, "INV-2003"),
        "10.00",
        status=PaymentStatus.SCHEDULED,
        method=card,
        scheduled_for=day,
    )
    busy = make_payment(
        db, invoice(db, "INV-1004"), "1.00", status=PaymentStatus.PROCESSING, method=card
    )
    db.commit()
    return west, east, busy


def test_update_through_the_sandbox_page_moves_payments_and_default_in_one_step(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    old = method(db, "4242")
    assert old.is_default
    expire(db, old, today(app) + timedelta(days=10))
    west, east, busy = _schedule(db, app, old)
    standing = AutopaySetting(  # autopay on the old card follows it too
        company_id=old.company_id,
        billing_account_id=west.billing_account_id,
        payment_method_id=old.id,
        timing=AutopayTiming.DUE_DATE,
    )
    with tenancy.system(db):
        db.add(standing)
        db.commit()
    hosted = press_update(client, old, "/portal/dashboard")
    assert hosted.status_code == 303
    page = hosted.headers["Location"]
    assert page.startswith("/sandbox/setup/sbs_")
    done = fill_card(client, page, number="4242 4242 4242 4242", expiry="12/31")
    assert done.status_code == 303
    back = client.get(done.headers["Location"])
    assert back.status_code == 303 and back.headers["Location"] == "/portal/dashboard"
    dashboard = client.get("/portal/dashboard").get_data(as_text=True)
    assert "Payment method updated." in dashboard and "Cards to update" not in dashboard

    gone = fresh(db, old.public_id)
    assert gone.removed_at is not None and not gone.is_default
    new = next(m for m in methods_of(db, old.company_id) if m.id != old.id and m.last4 == "4242")
    assert new.is_default and (new.exp_month, new.exp_year) == (12, 2031)
    moved = on_method(db, [west.id, east.id, busy.id])
    assert moved == {west.id: new.id, east.id: new.id, busy.id: old.id}  # processing stays
    with tenancy.system(db):
        db.refresh(standing)
    assert standing.payment_method_id == new.id and standing.enabled
    replaced = audit_events(db, "Portal.PaymentMethodReplaced")
    assert [e.properties for e in replaced] == [
        {
            "old_method_id": old.public_id,
            "new_method_id": new.public_id,
            "payments_moved": 2,
            "autopay_moved": 1,
        }
    ]
    assert len(audit_events(db, "Portal.PaymentMethodAdded")) == 1
    with tenancy.system(db):
        token = db.get(SandboxMethod, old.gateway_token)
        assert token is not None and token.detached_at is not None  # forgotten at the gateway
    activity = text(client.get("/portal/activity").get_data(as_text=True))
    assert "Payment method replaced" in activity and "Scheduled payments moved: 2" in activity
    # A reload of the return address changes nothing more.
    again = client.get(done.headers["Location"])
    assert again.status_code == 303
    assert len(audit_events(db, "Portal.PaymentMethodReplaced")) == 1


def test_canceling_on_the_hosted_page_changes_nothing(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    old = method(db, "4242")
    before = {m.id for m in methods_of(db, old.company_id)}
    hosted = press_update(client, old)
    assert hosted.status_code == 303
    back = client.get(f"/portal/payment-methods/{old.public_id}/updated")
    assert back.status_code == 303 and back.headers["Location"] == "/portal/payment-methods"
    assert "The card was not updated." in client.get("/portal/payment-methods").get_data(
        as_text=True
    )
    assert {m.id for m in methods_of(db, old.company_id)} == before
    assert fresh(db, old.public_id).is_default


def test_a_failure_in_the_middle_leaves_nothing_half_done(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = method(db, "4242")
    west, east, _busy = _schedule(db, app, old)
    before = {m.id for m in methods_of(db, old.company_id)}

    def broken(
        _session: Session, _old: PaymentMethod, _new: PaymentMethod, *_a: Any, **_k: Any
    ) -> int:
        raise RuntimeError("autopay could not move")

    monkeypatch.setattr(autopay, "replace_method", broken)
    page = press_update(client, old).headers["Location"]
    done = fill_card(client, page, number="4242424242424242")
    failed = client.get(done.headers["Location"])
    assert failed.status_code == 500
    assert {m.id for m in methods_of(db, old.company_id)} == before  # no new card kept
    assert on_method(db, [west.id, east.id]) == {west.id: old.id, east.id: old.id}
    assert fresh(db, old.public_id).removed_at is None and fresh(db, old.public_id).is_default
    assert audit_events(db, "Portal.PaymentMethodReplaced") == []
    with tenancy.system(db):
        assert db.get(SandboxMethod, old.gateway_token).detached_at is None  # type: ignore[union-attr]


def test_only_who_may_manage_it_updates_a_card(
    app: Flask, client: FlaskClient, auth: Auth, db: Session
) -> None:
    visa = method(db, "4242")
    auth.sign_in("ap@acme.test")
    assert press_update(client, visa).status_code == 403
    assert client.get(f"/portal/payment-methods/{visa.public_id}/updated").status_code == 303
    assert fresh(db, visa.public_id).removed_at is None
    assert press_update_raw(client, "pm_nope").status_code == 404
    globex = method(db, "4444")
    assert press_update(client, globex).status_code == 404  # another company's: not found


def press_update_raw(client: FlaskClient, public_id: str) -> Any:
    token = csrf_token(client, "/portal/payment-methods")
    return client.post(f"/portal/payment-methods/{public_id}/update", data={"csrf_token": token})


def test_a_restricted_user_cannot_replace_by_the_return_address(app: Flask, db: Session) -> None:
    """ap@acme.test completes a hosted page of their own, then points its return at the
    admin's card: refused, and the admin's card stands."""
    admin_card = method(db, "4242")
    ap = app.test_client()
    Auth(app, ap).sign_in("ap@acme.test")
    token = csrf_token(ap, "/portal/payment-methods")
    hosted = ap.post(
        "/portal/payment-methods/new", data={"csrf_token": token, "kind": "card"}
    ).headers["Location"]
    done = fill_card(ap, hosted, number="4242424242424242")
    session_id = done.headers["Location"].rsplit("session_id=", 1)[1]
    answer = ap.get(
        f"/portal/payment-methods/{admin_card.public_id}/updated?session_id={session_id}"
    )
    assert answer.status_code == 403
    assert fresh(db, admin_card.public_id).removed_at is None
    assert audit_events(db, "Portal.PaymentMethodAdded") == []  # nothing added on the way
