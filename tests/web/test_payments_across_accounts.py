"""Invoices of several billing accounts paid in one go: one confirm step, one payment per account
underneath (each with a key derived from the form's), one page listing them."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.gateways import ChargeRequest, ChargeResult, ChargeStatus
from portal.gateways.sandbox import SandboxGateway
from portal.models import (
    BillingAccount,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentGroup,
    PaymentStatus,
    SandboxCharge,
    UserAccountGrant,
)
from portal.models.payment import valid_reference
from tests.conftest import Auth, csrf_token, readable, user_by_email
from tests.factories import account_named, make_invoice
from tests.web.payment_helpers import audit_events, invoice, method, open_form, run_jobs, submit

GROUP = re.compile(r"/portal/payments/group/(pgr_[A-Za-z0-9_-]+)$")


def _one_on_each_account(db: Session) -> tuple[Invoice, Invoice]:
    """An overdue invoice on Acme West and one on Acme East."""
    west = make_invoice(db, account_named(db, "Acme West"), "1500.00", due=-45)
    east = make_invoice(db, account_named(db, "Acme East"), "250.00", due=-15)
    return west, east


def _money(minor: int) -> str:
    return f"{minor / 100:.2f}"


def _pay_group(
    client: FlaskClient,
    invoices: list[Invoice],
    method_id: str,
    amounts: dict[str, str] | None = None,
    **extra: str,
) -> tuple[Any, str, str]:
    """Open, review, confirm. Returns (confirm response, group public id, the form's key)."""
    _page, key, token = open_form(client, *(inv.public_id for inv in invoices))
    review = submit(
        client, invoices, key=key, token=token, action="review", method_id=method_id,
        amounts=amounts, **extra,
    )  # fmt: skip
    assert review.status_code == 200, review.get_data(as_text=True)
    confirmed = submit(
        client, invoices, key=key, token=token, action="confirm", method_id=method_id,
        amounts=amounts, **extra,
    )  # fmt: skip
    assert confirmed.status_code == 303, confirmed.get_data(as_text=True)
    match = GROUP.search(confirmed.headers["Location"])
    assert match, confirmed.headers["Location"]
    return confirmed, match.group(1), key


def _group(db: Session, public_id: str) -> tuple[PaymentGroup, list[Payment]]:
    with tenancy.system(db):
        group = db.scalars(
            select(PaymentGroup)
            .where(PaymentGroup.public_id == public_id)
            .execution_options(populate_existing=True)
        ).one()
        made = list(
            db.scalars(
                select(Payment)
                .where(Payment.group_id == group.id)
                .order_by(Payment.id)
                .execution_options(populate_existing=True)
            )
        )
        for payment in made:
            _ = payment.billing_account.name, [a.invoice.number for a in payment.allocations]
    return group, made


def test_two_accounts_one_confirm_step_a_payment_each_one_page(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    west_old, east, west_new = (invoice(db, n) for n in ("INV-1012", "INV-2002", "INV-1004"))
    owed = {inv.number: inv.balance_due for inv in (west_old, east, west_new)}
    visa = method(db, "4242").public_id
    page, key, token = open_form(client, west_new.public_id, east.public_id, west_old.public_id)
    assert "These invoices belong to 2 billing accounts" in page
    assert page.index("INV-1012") < page.index("INV-2002") < page.index("INV-1004")  # by due
    review = submit(
        client, [west_old, east, west_new], key=key, token=token, action="review",
        method_id=visa,
    )  # fmt: skip
    text = readable(review.get_data(as_text=True))
    assert review.status_code == 200
    # The split per account before "Pay": Acme East's payment, then Acme West's.
    west_total = owed["INV-1012"] + owed["INV-1004"]
    assert "That is one payment per billing account, 2 in all" in text
    assert f"<caption>Acme East: ${owed['INV-2002'] / 100:,.2f}</caption>" in text
    assert f"<caption>Acme West: ${west_total / 100:,.2f}</caption>" in text
    assert text.index("Acme East:") < text.index("INV-2002") < text.index("Acme West:")
    grand = sum(owed.values())
    assert f"Pay ${grand / 100:,.2f}" in text
    done = submit(
        client, [west_old, east, west_new], key=key, token=token, action="confirm",
        method_id=visa,
    )  # fmt: skip
    assert done.status_code == 303
    match = GROUP.search(done.headers["Location"])
    assert match
    group, made = _group(db, match.group(1))
    assert [p.billing_account.name for p in made] == ["Acme East", "Acme West"]
    assert [p.amount for p in made] == [owed["INV-2002"], west_total]
    assert [sorted(a.invoice.number for a in p.allocations) for p in made] == [
        ["INV-2002"],
        ["INV-1004", "INV-1012"],
    ]
    assert all(a.billing_account_id == p.billing_account_id for p in made for a in p.allocations)
    assert all(p.status is PaymentStatus.SUCCEEDED for p in made)
    admin = user_by_email(db, "admin@acme.test")
    assert group.idempotency_key == f"{admin.public_id}:{key}"
    assert [p.idempotency_key for p in made] == [f"{group.idempotency_key}.{n}" for n in (1, 2)]
    assert all(valid_reference(p.reference) for p in made)
    for number in owed:
        assert invoice(db, number).status is InvoiceStatus.PAID
    made_events = audit_events(db, "Portal.PaymentMade")
    assert sorted(e.properties["reference"] for e in made_events) == sorted(
        p.reference for p in made
    )
    submitted = audit_events(db, "Portal.PaymentSubmitted")
    assert {e.properties["group_id"] for e in submitted} == {group.public_id}
    # The group's page: each payment with its account, reference, amount, status and receipt.
    shown = readable(client.get(done.headers["Location"]).get_data(as_text=True))
    assert f"Payments of ${grand / 100:,.2f} processed successfully" in shown
    for payment in made:
        assert f">{payment.reference}</a>" in shown
        assert f"/portal/payments/{payment.public_id}/receipt.pdf" in shown
    assert shown.count("badge-succeeded") == 2 and "data-hx-trigger" not in shown
    # Each payment's own page links back to the group.
    single = client.get(f"/portal/payments/{made[0].public_id}").get_data(as_text=True)
    assert f"Receipt {made[0].reference}" in single and "Acme East" in single
    assert f'href="/portal/payments/group/{group.public_id}"' in single


def test_a_total_is_spread_oldest_due_first_across_the_accounts(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    oldest, middle, newest = (invoice(db, n) for n in ("INV-1012", "INV-2002", "INV-1004"))
    total = oldest.balance_due + middle.balance_due + 1  # two whole balances and a cent
    visa = method(db, "4242").public_id
    _page, key, token = open_form(client, oldest.public_id, middle.public_id, newest.public_id)
    spread = submit(
        client, [oldest, middle, newest], key=key, token=token, action="allocate",
        method_id=visa, amounts={}, total=_money(total),
    )  # fmt: skip
    filled = spread.get_data(as_text=True)
    assert spread.status_code == 200
    for inv, expected in ((oldest, oldest.balance_due), (middle, middle.balance_due), (newest, 1)):
        assert re.search(rf'name="amount-{inv.public_id}"[^>]*value="{_money(expected)}"', filled)
    amounts = {
        oldest.public_id: _money(oldest.balance_due),
        middle.public_id: _money(middle.balance_due),
        newest.public_id: "0.01",
    }
    _response, public_id, _key = _pay_group(client, [oldest, middle, newest], visa, amounts)
    _group_row, made = _group(db, public_id)
    by_account = {p.billing_account.name: p.amount for p in made}
    assert by_account == {"Acme East": middle.balance_due, "Acme West": oldest.balance_due + 1}
    assert sum(by_account.values()) == total


def test_an_account_left_at_zero_gets_no_payment(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    west, east = _one_on_each_account(db)
    amounts = {west.public_id: "10.00", east.public_id: ""}
    _page, key, token = open_form(client, west.public_id, east.public_id)
    visa = method(db, "4242").public_id
    review = submit(
        client, [west, east], key=key, token=token, action="review", method_id=visa,
        amounts=amounts,
    )  # fmt: skip
    assert "one payment per billing account" not in review.get_data(as_text=True)
    done = submit(
        client, [west, east], key=key, token=token, action="confirm", method_id=visa,
        amounts=amounts,
    )  # fmt: skip
    assert re.search(r"/portal/payments/pay_[\w-]+$", done.headers["Location"])  # no group
    with tenancy.system(db):
        assert db.scalar(select(func.count()).select_from(PaymentGroup)) == 0


def test_a_double_submit_finds_every_payment_and_makes_none_twice(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    west, east = _one_on_each_account(db)
    visa = method(db, "4242").public_id
    _page, key, token = open_form(client, west.public_id, east.public_id)
    answers = [
        submit(client, [west, east], key=key, token=token, action="confirm", method_id=visa)
        for _ in range(3)
    ]
    assert {a.status_code for a in answers} == {303}
    assert len({a.headers["Location"] for a in answers}) == 1
    with tenancy.system(db):
        assert db.scalar(select(func.count()).select_from(PaymentGroup)) == 1
        made = db.scalars(select(Payment).where(Payment.group_id.is_not(None))).all()
        references = [p.gateway_reference for p in made]
        charges = db.scalar(
            select(func.count())
            .select_from(SandboxCharge)
            .where(SandboxCharge.reference.in_(references))
        )
    assert len(made) == 2 and charges == 2
    assert len(audit_events(db, "Portal.PaymentMade")) == 2


def test_one_declined_charge_does_not_stop_the_other(
    client: FlaskClient, signed_in: Auth, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first account's charge is declined at the gateway; the second is still made."""
    real_charge = SandboxGateway.charge

    def decline_the_first(self: SandboxGateway, request: ChargeRequest) -> ChargeResult:
        if request.idempotency_key.endswith(".1"):
            return ChargeResult(ChargeStatus.FAILED, None, failure_code="insufficient_funds")
        return real_charge(self, request)

    monkeypatch.setattr(SandboxGateway, "charge", decline_the_first)
    west, east = _one_on_each_account(db)
    owed_east = east.balance_due
    response, public_id, _key = _pay_group(client, [west, east], method(db, "4242").public_id)
    _row, made = _group(db, public_id)
    failed, paid = made
    assert (failed.billing_account.name, failed.status) == ("Acme East", PaymentStatus.FAILED)
    assert (paid.billing_account.name, paid.status) == ("Acme West", PaymentStatus.SUCCEEDED)
    assert invoice(db, east.number).status is InvoiceStatus.PAYMENT_FAILED
    assert invoice(db, east.number).balance_due == owed_east
    assert invoice(db, west.number).status is InvoiceStatus.PAID
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "1 of 2 payments processed successfully" in page
    assert "Payment failed: your card has insufficient funds" in page
    assert f'href="/portal/payment?invoice={east.public_id}"' in page  # Retry, that one only
    assert f"/portal/payments/{paid.public_id}/receipt.pdf" in page
    assert f"/portal/payments/{failed.public_id}/receipt.pdf" not in page


def test_a_charge_that_breaks_is_left_for_reconciliation_and_the_next_is_made(
    app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from workers import jobs

    real_charge = SandboxGateway.charge

    def break_the_first(self: SandboxGateway, request: ChargeRequest) -> ChargeResult:
        if request.idempotency_key.endswith(".1"):
            raise RuntimeError("the gateway answered nonsense")
        return real_charge(self, request)

    monkeypatch.setattr(SandboxGateway, "charge", break_the_first)
    west, east = _one_on_each_account(db)
    response, public_id, _key = _pay_group(client, [west, east], method(db, "4242").public_id)
    _row, made = _group(db, public_id)
    assert [p.status for p in made] == [PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED]
    assert "reconciliation will ask" in caplog.text
    waiting = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Your payments are being processed" in waiting
    assert 'data-hx-trigger="load delay:1s"' in waiting
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in waiting
    # The sweep asks again with the same key: the same payment is charged, once.
    monkeypatch.setattr(SandboxGateway, "charge", real_charge)
    app.extensions["portal.clock"].advance(timedelta(minutes=3))
    with app.app_context():
        # The demo's own processing payments may be due for a look too, by the suite's timing.
        assert jobs.reconcile_payments() >= 1
    _row, made = _group(db, public_id)
    assert [p.status for p in made] == [PaymentStatus.SUCCEEDED, PaymentStatus.SUCCEEDED]
    settled = client.get(
        response.headers["Location"], headers={"HX-Request": "true", "HX-Target": "payment-panel"}
    ).get_data(as_text=True)
    assert "processed successfully" in settled and "data-hx-trigger" not in settled
    assert 'data-hx-swap-oob="innerHTML:#payment-announcer"' in settled
    assert settled.lstrip().startswith("<section") and "<html" not in settled


def test_a_scheduled_group_holds_each_amount_runs_on_its_day_and_cancels_one_by_one(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    west, east = invoice(db, "INV-1003"), invoice(db, "INV-2003")
    day: date = app.extensions["portal.clock"].today() + timedelta(days=2)
    response, public_id, _key = _pay_group(
        client, [west, east], method(db, "4242").public_id, scheduled_for=day.isoformat()
    )
    _row, made = _group(db, public_id)
    assert [p.status for p in made] == [PaymentStatus.SCHEDULED] * 2
    assert {p.scheduled_for for p in made} == {day}
    queued = app.extensions["portal.jobs"].pending()
    assert [name for _when, name in queued] == ["run_scheduled_payment"] * 2
    # Both amounts are held: neither invoice can be paid again meanwhile.
    for inv in (west, east):
        assert client.get(f"/portal/payment?invoice={inv.public_id}").status_code == 409
    page = readable(client.get(response.headers["Location"]).get_data(as_text=True))
    total = west.balance_due + east.balance_due
    assert f"Payments of ${total / 100:,.2f} scheduled for" in page
    assert page.count("Cancel scheduled payment") == 2
    # Cancel East's from the group's page; the page comes back.
    token = csrf_token(client, response.headers["Location"])
    east_payment = next(p for p in made if p.billing_account.name == "Acme East")
    canceled = client.post(
        f"/portal/payments/{east_payment.public_id}/cancel",
        data={"csrf_token": token, "back": "group"},
    )
    assert canceled.headers["Location"] == f"/portal/payments/group/{public_id}"
    app.extensions["portal.clock"].advance(timedelta(days=2, hours=7))
    run_jobs(app)
    run_jobs(app)
    _row, made = _group(db, public_id)
    assert {p.billing_account.name: p.status for p in made} == {
        "Acme East": PaymentStatus.CANCELED,
        "Acme West": PaymentStatus.SUCCEEDED,
    }
    assert invoice(db, "INV-1003").status is InvoiceStatus.PAID
    assert invoice(db, "INV-2003").status is InvoiceStatus.OPEN


def test_a_restricted_user_sees_only_their_accounts_payment_of_a_group(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in()
    west, east = _one_on_each_account(db)
    response, public_id, _key = _pay_group(client, [west, east], method(db, "4242").public_id)
    _row, made = _group(db, public_id)
    west_payment = next(p for p in made if p.billing_account.name == "Acme West")
    east_payment = next(p for p in made if p.billing_account.name == "Acme East")
    auth.logout()
    auth.sign_in("ap@acme.test")
    page = readable(client.get(response.headers["Location"]).get_data(as_text=True))
    assert west_payment.reference in page and "Acme West" in page
    assert east_payment.reference not in page and "Acme East" not in page
    assert f"${east_payment.amount / 100:,.2f}" not in page
    assert f"Payments of ${west_payment.amount / 100:,.2f} processed successfully" in page
    assert client.get(f"/portal/payments/{east_payment.public_id}").status_code == 404
    history = client.get("/portal/payment-history").get_data(as_text=True)
    assert west_payment.reference in history and east_payment.reference not in history


def test_another_companys_group_and_an_unknown_one_are_not_found(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in()
    west, east = _one_on_each_account(db)
    response, _public_id, _key = _pay_group(client, [west, east], method(db, "4242").public_id)
    assert client.get("/portal/payments/group/pgr_unknown").status_code == 404
    auth.logout()
    auth.sign_in("admin@globex.test")
    foreign = client.get(response.headers["Location"])
    assert foreign.status_code == 404 and "Payment not found." in foreign.get_data(as_text=True)


def test_a_restricted_user_with_two_accounts_pays_both_at_once(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    ap = user_by_email(db, "ap@acme.test")
    with tenancy.system(db):
        east = db.scalars(select(BillingAccount).where(BillingAccount.name == "Acme East")).one()
        db.add(
            UserAccountGrant(company_id=ap.company_id, user_id=ap.id, billing_account_id=east.id)
        )
        db.commit()
    auth.sign_in("ap@acme.test")
    west_inv, east_inv = invoice(db, "INV-1004"), invoice(db, "INV-2003")
    _response, public_id, _key = _pay_group(
        client, [west_inv, east_inv], method(db, "4242").public_id
    )
    _row, made = _group(db, public_id)
    assert [p.billing_account.name for p in made] == ["Acme East", "Acme West"]
    assert all(p.user_id == ap.id and p.status is PaymentStatus.SUCCEEDED for p in made)


def test_the_group_page_uses_a_bounded_number_of_queries(
    client: FlaskClient, signed_in: Auth, db: Session, count_queries: Any
) -> None:
    west, east = _one_on_each_account(db)
    response, _public_id, _key = _pay_group(client, [west, east], method(db, "4242").public_id)
    for target in ("", "payment-panel"):
        before = count_queries.count
        headers = {"HX-Request": "true", "HX-Target": target}
        assert client.get(response.headers["Location"], headers=headers).status_code == 200
        # session + user, flags, the group, its payments (account and group joined), their
        # allocations, invoices and methods: whatever the number of payments
        assert count_queries.count - before <= 8, count_queries.statements[before:]
