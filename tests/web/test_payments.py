"""Paying invoices through the sandbox gateway: the whole flow, every card outcome, the rules."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import AuditEvent, BillingAccount, InvoiceStatus, PaymentStatus
from tests.conftest import Auth, csrf_token
from tests.factories import account_named, make_invoice, make_payment, minor
from tests.web.payment_helpers import (
    audit_events,
    invoice,
    method,
    open_form,
    pay,
    payment,
    review,
    submit,
)


@pytest.fixture
def west(db: Session) -> BillingAccount:
    """The billing account admin@acme.test pays for in most tests here."""
    return account_named(db, "Acme West")


def test_pay_one_invoice_in_full(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    inv = make_invoice(db, west, "1234.56", due=-45)
    visa = method(db, "4242")
    response, pid = pay(client, [inv], visa.public_id)
    assert response.status_code == 303, response.get_data(as_text=True)
    page = client.get(f"/portal/payments/{pid}").get_data(as_text=True)
    assert "processed successfully" in page
    paid = payment(db, pid)
    assert paid.status is PaymentStatus.SUCCEEDED and paid.amount == minor("1234.56")
    assert paid.receipt_number and paid.gateway_reference
    after = invoice(db, inv.number)
    assert after.status is InvoiceStatus.PAID and after.balance_due == 0
    with tenancy.system(db):
        names = db.scalars(select(AuditEvent.name)).all()
    assert "Portal.PaymentMade" in names


def test_a_card_whose_charges_fail_says_why_and_offers_retry(
    client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    inv = make_invoice(db, west, "480.00", due=-10)
    owed = minor("480.00")
    response, pid = pay(client, [inv], method(db, "0341").public_id)
    assert response.status_code == 303
    page = client.get(f"/portal/payments/{pid}").get_data(as_text=True)
    assert "Payment failed: your card was declined" in page
    assert f'href="/portal/payment?invoice={inv.public_id}"' in page  # Retry
    failed = payment(db, pid)
    assert failed.status is PaymentStatus.FAILED and failed.failure_code == "card_declined"
    after = invoice(db, inv.number)
    assert after.status is InvoiceStatus.PAYMENT_FAILED and after.balance_due == owed
    event = audit_events(db, "Portal.PaymentFailed")[-1]
    assert event.properties["error_reason"] == "card_declined"
    assert event.properties["payment_method"] == "card"
    assert event.properties["customer_id"].startswith("cmp_")
    assert event.properties["invoice_ids"] == [inv.public_id]
    assert event.properties["amount"] == owed
    # Retry makes a new payment with the good card.
    again, second = pay(client, [after], method(db, "4242").public_id)
    assert again.status_code == 303 and second != pid
    assert invoice(db, inv.number).status is InvoiceStatus.PAID


def test_partial_payment_where_the_company_allows_it(
    client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    inv = make_invoice(db, west, "350.00", due=10)
    _response, pid = pay(client, [inv], method(db, "4242").public_id, {inv.public_id: "100.00"})
    assert payment(db, pid).amount == minor("100.00")
    after = invoice(db, inv.number)
    assert after.status is InvoiceStatus.PARTIALLY_PAID
    assert after.balance_due == minor("250.00")


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("0", "Enter an amount for at least one invoice."),
        ("-5", "Enter an amount above zero."),
        ("12.345", "Use at most two decimals."),
        ("abc", "Enter an amount, like 125.00."),
        ("99999999", "more than the"),
    ],
)
def test_bad_amounts_are_refused_inline_and_keep_the_input(
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    west: BillingAccount,
    typed: str,
    message: str,
) -> None:
    inv = make_invoice(db, west, "1500.00")
    response = review(client, inv, method(db, "4242").public_id, amounts={inv.public_id: typed})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Payment validation failed." in page and message in page
    assert f'value="{typed}"' in page  # nothing typed is lost
    assert 'aria-invalid="true"' in page


def test_a_company_that_pays_in_full_refuses_partial_amounts(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in("admin@globex.test")
    inv = invoice(db, "RE-2026-002")
    page, key, token = open_form(client, inv.public_id)
    assert f'name="amount-{inv.public_id}"' not in page  # nothing to type: the whole balance
    assert "pays invoices in full" in page
    # A crafted partial amount is ignored: the payment is the full balance or nothing.
    response = submit(
        client,
        [inv],
        key=key,
        token=token,
        action="review",
        method_id=None,
        amounts={inv.public_id: "1.00"},
    )
    assert response.status_code == 422 and "Choose how to pay." in response.get_data(as_text=True)


def test_several_invoices_in_one_payment_and_oldest_first(
    client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    first = make_invoice(db, west, "300.00", due=-95)
    second = make_invoice(db, west, "200.00", due=-45)
    third = make_invoice(db, west, "100.00", due=20)
    visa = method(db, "4242").public_id
    page, key, token = open_form(client, third.public_id, first.public_id, second.public_id)
    # Oldest due first, whatever the order asked in.
    assert page.index(first.number) < page.index(second.number) < page.index(third.number)
    total = minor("300.01")  # all of the oldest and one cent of the next
    response = submit(
        client,
        [first, second, third],
        key=key,
        token=token,
        action="allocate",
        method_id=visa,
        amounts={},
        total=f"{total / 100:.2f}",
    )
    filled = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f'name="amount-{first.public_id}" inputmode="decimal" autocomplete="off"' in filled
    assert 'value="300.00"' in filled and 'value="0.01"' in filled
    amounts = {
        first.public_id: "300.00",
        second.public_id: "0.01",
        third.public_id: "",
    }
    confirm = submit(
        client,
        [first, second, third],
        key=key,
        token=token,
        action="review",
        method_id=visa,
        amounts=amounts,
    )
    assert "How the payment is applied" in confirm.get_data(as_text=True)
    done = submit(
        client,
        [first, second, third],
        key=key,
        token=token,
        action="confirm",
        method_id=visa,
        amounts=amounts,
    )
    assert done.status_code == 303
    made = payment(db, done.headers["Location"].rsplit("/", 1)[1])
    assert made.amount == total
    assert sorted(a.amount for a in made.allocations) == [1, minor("300.00")]
    assert sum(a.amount for a in made.allocations) == made.amount  # no cent stranded
    assert invoice(db, first.number).status is InvoiceStatus.PAID
    assert invoice(db, second.number).balance_due == minor("199.99")
    assert invoice(db, third.number).balance_due == minor("100.00")


def test_a_total_above_what_is_due_is_refused(
    client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    a, b = make_invoice(db, west, "120.00"), make_invoice(db, west, "80.00")
    _page, key, token = open_form(client, a.public_id, b.public_id)
    too_much = 200.01
    response = submit(
        client,
        [a, b],
        key=key,
        token=token,
        action="allocate",
        method_id=None,
        amounts={},
        total=f"{too_much:.2f}",
    )
    assert response.status_code == 422
    assert "due on these invoices" in response.get_data(as_text=True)


def test_invoices_in_two_currencies_are_paid_separately(
    client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    usd = make_invoice(db, west, "120.00")
    other = make_invoice(db, account_named(db, "Acme East"), "80.00", currency="EUR")
    response = client.get(f"/portal/payment?invoice={usd.public_id}&invoice={other.public_id}")
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "One currency per payment" in page
    assert f'href="/portal/payment?invoice={usd.public_id}"' in page
    assert f'href="/portal/payment?invoice={other.public_id}"' in page


def test_a_double_submit_is_one_payment(
    client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    inv = make_invoice(db, west, "120.00")
    visa = method(db, "4242").public_id
    _page, key, token = open_form(client, inv.public_id)
    first = submit(client, [inv], key=key, token=token, action="confirm", method_id=visa)
    second = submit(client, [inv], key=key, token=token, action="confirm", method_id=visa)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    with tenancy.system(db):
        assert len(audit_events(db, "Portal.PaymentMade")) == 1


def test_paying_a_paid_invoice_is_a_409_with_the_receipt(
    client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    inv = make_invoice(db, west, "120.00")
    visa = method(db, "4242").public_id
    _page, key, token = open_form(client, inv.public_id)
    _done, pid = pay(client, [inv], visa)
    # The form opened before the payment, submitted after it: a different key, a paid invoice.
    late = submit(client, [inv], key=key, token=token, action="confirm", method_id=visa)
    page = late.get_data(as_text=True)
    assert late.status_code == 409
    assert "Payment already processed." in page and f"/portal/payments/{pid}" in page
    assert "View Receipt" in page
    assert client.get(f"/portal/payment?invoice={inv.public_id}").status_code == 409


def test_an_invoice_being_paid_cannot_be_paid_again(
    client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    being_paid = make_invoice(db, west, "120.00")
    make_payment(db, being_paid, status=PaymentStatus.PROCESSING)
    response = client.get(f"/portal/payment?invoice={being_paid.public_id}")
    assert response.status_code == 409
    assert "already on its way" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("number", "status"),
    [("INV-1011", 422), ("nope", 404)],
)
def test_unpayable_and_unknown_invoices(
    client: FlaskClient, signed_in: Auth, db: Session, number: str, status: int
) -> None:
    pid = invoice(db, number).public_id if number.startswith("INV") else "inv_missing"
    response = client.get(f"/portal/payment?invoice={pid}")
    assert response.status_code == status


def test_another_companys_invoice_is_not_found(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    response = client.get(f"/portal/payment?invoice={invoice(db, 'RE-2026-002').public_id}")
    assert response.status_code == 404
    assert "Invoice not found." in response.get_data(as_text=True)


def test_a_restricted_user_pays_only_their_accounts_invoices(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in("ap@acme.test")
    assert (
        client.get(f"/portal/payment?invoice={invoice(db, 'INV-2002').public_id}").status_code
        == 404
    )
    inv = invoice(db, "INV-1004")
    _response, pid = pay(client, [inv], method(db, "4242").public_id)
    assert payment(db, pid).status is PaymentStatus.SUCCEEDED
    history = client.get("/portal/payment-history").get_data(as_text=True)
    assert pid in history or payment(db, pid).receipt_number in history
    assert "INV-2001" not in history  # East's payments stay out of sight


def test_malformed_posts_are_400(
    client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    _page, _key, token = open_form(client, make_invoice(db, west).public_id)
    response = client.post(
        "/portal/payment", data={"csrf_token": token, "idempotency_key": "x", "action": "confirm"}
    )
    assert response.status_code == 400
    assert "Invalid payment data. Check your input." in response.get_data(as_text=True)


def test_expired_methods_cannot_pay(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    visa = method(db, "4242")
    with tenancy.system(db):
        visa.exp_year = app.extensions["portal.clock"].today().year - 1
        db.commit()
    page = client.get("/portal/payment-methods").get_data(as_text=True)
    assert "Expired" in page
    inv = make_invoice(db, account_named(db, "Acme West"))
    _page, key, token = open_form(client, inv.public_id)
    response = submit(
        client, [inv], key=key, token=token, action="review", method_id=visa.public_id
    )
    assert response.status_code == 422
    assert "This card has expired." in response.get_data(as_text=True)


def test_flag_off_hides_pay_actions_and_closes_the_routes(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    from portal.models import FeatureFlag

    inv = make_invoice(db, west, "120.00", due=-10)
    assert "Pay Now" in client.get(f"/portal/invoices/{inv.public_id}").get_data(as_text=True)
    with tenancy.system(db):
        db.merge(FeatureFlag(name="m25_portal_payment", enabled=False))
        db.commit()
    detail = client.get(f"/portal/invoices/{inv.public_id}").get_data(as_text=True)
    assert "Pay Now" not in detail and "Pay selected" not in client.get(
        "/portal/invoices"
    ).get_data(as_text=True)
    closed = client.get(f"/portal/payment?invoice={inv.public_id}")
    assert closed.status_code == 503
    assert "Online payment isn&#39;t available right now." in closed.get_data(as_text=True)


def test_the_payment_page_polls_while_processing(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    processing = invoice(db, "INV-1009")
    with tenancy.system(db):
        from portal.models import Payment, PaymentAllocation

        held = db.scalars(
            select(Payment)
            .join(PaymentAllocation)
            .where(PaymentAllocation.invoice_id == processing.id)
        ).first()
        assert held is not None
    page = client.get(f"/portal/payments/{held.public_id}").get_data(as_text=True)
    assert "Your payment is being processed" in page
    assert 'data-hx-trigger="load delay:1s"' in page
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in page
    assert 'role="status"' in page
    fragment = client.get(
        f"/portal/payments/{held.public_id}",
        headers={"HX-Request": "true", "HX-Target": "payment-panel"},
    ).get_data(as_text=True)
    assert fragment.lstrip().startswith("<section") and "<html" not in fragment


def test_payment_pages_use_a_bounded_number_of_queries(
    client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount, count_queries: Any
) -> None:
    """The same number of statements for one invoice or five, one payment or thirteen."""
    ids = [make_invoice(db, west, "100.00", due=days).public_id for days in (-45, -10, 10, 20, 30)]
    _response, pid = pay(client, [make_invoice(db, west)], method(db, "4242").public_id)
    counts = {}
    for name, path in (
        ("form-1", f"/portal/payment?invoice={ids[0]}"),
        ("form-5", "/portal/payment?" + "&".join(f"invoice={i}" for i in ids)),
        ("payment", f"/portal/payments/{pid}"),
        ("history", "/portal/payment-history"),
        ("methods", "/portal/payment-methods"),
    ):
        before = count_queries.count
        assert client.get(path).status_code == 200, name
        counts[name] = count_queries.count - before
    assert counts["form-1"] == counts["form-5"], counts
    # session + user, company, flags, the page's own reads, the header's unread notifications
    # (measured: 4 to 9)
    assert max(counts.values()) <= 9, counts


@pytest.mark.parametrize(
    ("raw", "locale", "expected"),
    [
        ("1,234.50", "en_US", 123_450),
        ("1.234,50", "de_DE", 123_450),
        ("1234,5", "de_DE", 123_450),
        ("1234.50", "de_DE", 123_450),  # the plain form is read everywhere
        ("$ 20", "en_US", 2_000),
        ("0", "en_US", 0),
        ("12.345", "en_US", "amount_decimals"),
        ("-5", "en_US", "amount_not_positive"),
        ("1,2,3", "de_DE", "amount_invalid"),
    ],
)
def test_amounts_are_read_as_the_locale_writes_them(
    raw: str, locale: str, expected: int | str
) -> None:
    from portal.services.payments import parse_amount

    assert parse_amount(raw, "USD", locale) == expected


def test_a_german_reader_types_a_decimal_comma(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    from tests.conftest import user_by_email

    admin = user_by_email(db, "admin@acme.test")
    with tenancy.system(db):
        admin.locale = "de_DE"
        db.commit()
    inv = make_invoice(db, account_named(db, "Acme West"), "2345.67")
    page, _key, _token = open_form(client, inv.public_id)
    assert 'value="2345,67"' in page  # prefilled as it reads
    _response, pid = pay(client, [inv], method(db, "4242").public_id, {inv.public_id: "1.000,25"})
    assert payment(db, pid).amount == minor("1000.25")
    assert invoice(db, inv.number).balance_due == minor("1345.42")


def test_an_overlong_key_is_a_400_not_an_error(
    client: FlaskClient, signed_in: Auth, db: Session, west: BillingAccount
) -> None:
    inv = make_invoice(db, west)
    _page, _key, token = open_form(client, inv.public_id)
    response = submit(
        client, [inv], key="k" * 64, token=token, action="confirm",
        method_id=method(db, "4242").public_id,
    )  # fmt: skip
    assert response.status_code == 400


def test_a_queue_that_is_down_does_not_undo_or_break_a_commit(
    db: Session, caplog: pytest.LogCaptureFixture
) -> None:
    from workers.queue import defer

    ran: list[str] = []

    def broken() -> None:
        raise ConnectionError("redis is down")

    defer(db, broken)
    defer(db, lambda: ran.append("next"))
    db.commit()  # no exception
    assert ran == ["next"] and "could not hand a job to the queue" in caplog.text


def test_another_companys_payment_and_method_are_not_found(
    app: Flask, client: FlaskClient, auth: Auth, db: Session
) -> None:
    from portal.models import Payment, PaymentAllocation

    with tenancy.system(db):
        acme_paid = db.scalars(
            select(Payment.public_id)
            .join(PaymentAllocation)
            .where(
                PaymentAllocation.invoice_id == invoice(db, "INV-1007").id,
                Payment.status == PaymentStatus.SUCCEEDED,
            )
        ).one()
    visa = method(db, "4242").public_id
    auth.sign_in("admin@globex.test")
    token = csrf_token(client, "/portal/payment-methods")
    for response in (
        client.get(f"/portal/payments/{acme_paid}"),
        client.get(f"/portal/payments/{acme_paid}/receipt.pdf"),
        client.post(f"/portal/payments/{acme_paid}/cancel", data={"csrf_token": token}),
        client.post(f"/portal/payment-methods/{visa}/remove", data={"csrf_token": token}),
        client.post(f"/portal/payment-methods/{visa}/default", data={"csrf_token": token}),
    ):
        assert response.status_code == 404, response.request.path
    assert acme_paid not in client.get("/portal/payment-history").get_data(as_text=True)


@pytest.mark.parametrize(
    ("currency", "total", "typed", "message"),
    [
        ("JPY", 150_000, "1200.5", "Enter a whole amount: JPY has no decimals."),
        ("KWD", 150_000, "12.3456", "Use at most 3 decimals."),
        ("USD", 150_000, "12.345", "Use at most two decimals."),
    ],
)
def test_too_many_decimals_is_said_in_the_currencys_terms(
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    west: BillingAccount,
    currency: str,
    total: int,
    typed: str,
    message: str,
) -> None:
    inv = make_invoice(db, west, total, currency=currency)
    response = review(client, inv, method(db, "4242").public_id, amounts={inv.public_id: typed})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert message in page and f'value="{typed}"' in page
