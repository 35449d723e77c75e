"""Pay balance: the dashboard's action opens the payment form with every invoice the user may pay
in one currency preselected, oldest due first, as the invoice list's "Select all" picks them
(`payments.balance_ids`), bounded by the form's own maximum."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import clock, tenancy
from portal.models import Company, Invoice, InvoiceStatus, PaymentStatus
from portal.services import payments
from portal.services.invoices import PAYABLE
from portal.services.payments.rules import MAX_INVOICES
from tests.conftest import Auth, readable, scoped_session
from tests.factories import account_named, make_invoice, make_payment
from tests.web.payment_helpers import KEY, TOKEN, method, submit

HIDDEN = re.compile(r'<input type="hidden" name="invoice" value="([^"]+)">')
PAY_LINK = re.compile(
    r'<a class="button button-primary" href="(/portal/payment\?balance=\w+)">([^<]+)</a>'
)


def _expected(db: Session, company: str, currency: str, account: str | None = None) -> list[str]:
    """What "Select all" on the invoice list would pick, computed row by row."""
    with tenancy.system(db):
        found = db.scalars(
            select(Invoice)
            .join(Company, Company.id == Invoice.company_id)
            .where(Company.name == company, Invoice.currency == currency)
            .execution_options(populate_existing=True)
        ).all()
        held = payments.reserved_amounts(db, [inv.id for inv in found])
        chosen = [
            inv
            for inv in found
            if inv.status in (*PAYABLE, InvoiceStatus.PROCESSING)
            and inv.balance_due - held.get(inv.id, 0) > 0
            and (account is None or inv.billing_account.name == account)
        ]
    chosen.sort(key=lambda inv: (inv.due_date, inv.issue_date, inv.number))
    return [inv.public_id for inv in chosen]


def _form_ids(client: FlaskClient, currency: str) -> tuple[list[str], str]:
    response = client.get(f"/portal/payment?balance={currency}")
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page
    return HIDDEN.findall(page), page


def _pay_links(client: FlaskClient) -> list[tuple[str, str]]:
    return PAY_LINK.findall(client.get("/portal/dashboard").get_data(as_text=True))


def test_the_dashboard_leads_to_every_payable_invoice_oldest_first(
    signed_in: Auth, db: Session
) -> None:
    client = signed_in.client
    assert _pay_links(client) == [("/portal/payment?balance=USD", "Pay balance")]
    ids, page = _form_ids(client, "USD")
    expected = _expected(db, "Acme Corp", "USD")
    assert len(expected) > 1 and ids == expected
    assert "billing accounts" in readable(page)  # Acme West and Acme East: one payment each
    assert 'id="balance-cut"' not in page


def test_disputed_and_wholly_held_invoices_are_left_out_a_partly_held_one_stays(
    signed_in: Auth, db: Session
) -> None:
    west = account_named(db, "Acme West")
    disputed = make_invoice(db, west, "90.00", due=-400, status=InvoiceStatus.DISPUTED)
    held = make_invoice(db, west, "80.00", due=-399)
    make_payment(db, held, status=PaymentStatus.SCHEDULED, scheduled_for=clock.today())
    partly = make_invoice(db, west, "70.00", due=-398)
    make_payment(db, partly, "20.00", status=PaymentStatus.SCHEDULED, scheduled_for=clock.today())
    voided = make_invoice(db, west, "60.00", due=-397, status=InvoiceStatus.VOID)
    ids, page = _form_ids(signed_in.client, "USD")
    assert disputed.public_id not in ids and held.public_id not in ids
    assert voided.public_id not in ids
    assert ids[0] == partly.public_id  # the oldest left, with what is still available
    assert "50.00" in readable(page)
    assert ids == _expected(db, "Acme Corp", "USD")


@pytest.mark.parametrize("signed_in", ["ap@acme.test"], indirect=True)
def test_a_restricted_user_gets_only_their_accounts(signed_in: Auth, db: Session) -> None:
    make_invoice(db, account_named(db, "Acme East"), "10.00", due=-500)
    ids, page = _form_ids(signed_in.client, "USD")
    assert ids == _expected(db, "Acme Corp", "USD", account="Acme West")
    assert "billing accounts" not in readable(page)


def test_several_currencies_get_one_link_each_and_never_a_refusal(
    signed_in: Auth, db: Session
) -> None:
    east = account_named(db, "Acme East")
    euro = make_invoice(db, east, "40.00", due=-3, currency="EUR")
    links = _pay_links(signed_in.client)
    assert links == [
        ("/portal/payment?balance=USD", "Pay USD balance"),
        ("/portal/payment?balance=EUR", "Pay EUR balance"),
    ]
    assert _form_ids(signed_in.client, "EUR")[0] == [euro.public_id]
    assert _form_ids(signed_in.client, "usd")[0] == _expected(db, "Acme Corp", "USD")


def test_the_form_says_when_the_balance_is_cut_to_its_maximum(
    app: Flask, signed_in: Auth, db: Session
) -> None:
    west = account_named(db, "Acme West")
    for n in range(MAX_INVOICES):
        make_invoice(db, west, "1.00", due=-1000 + n)
    expected = _expected(db, "Acme Corp", "USD")
    assert len(expected) > MAX_INVOICES
    ids, page = _form_ids(signed_in.client, "USD")
    assert ids == expected[:MAX_INVOICES]
    assert (
        f"These are the oldest {MAX_INVOICES} of the {len(expected)} invoices you can pay in USD"
        in readable(page)
    )
    scoped = scoped_session(app, "admin@acme.test")
    found = payments.balance_ids(scoped, "USD", limit=3)
    assert (found.public_ids, found.found, found.cut) == (expected[:3], len(expected), True)


@pytest.mark.parametrize("signed_in", ["admin@initech.test"], indirect=True)
def test_nothing_to_pay_shows_no_action_and_the_form_says_so(signed_in: Auth) -> None:
    assert _pay_links(signed_in.client) == []
    for value in ("USD", "", "XYZ", "1' OR 1=1", "€€€€"):
        response = signed_in.client.get("/portal/payment", query_string={"balance": value})
        assert response.status_code == 409
        assert "is open to pay now" in readable(response.get_data(as_text=True))


def test_the_preselected_balance_is_paid_one_payment_per_account(
    signed_in: Auth, db: Session
) -> None:
    client = signed_in.client
    ids, page = _form_ids(client, "USD")
    key, token = KEY.search(page), TOKEN.search(page)
    assert key and token
    with tenancy.system(db):
        chosen = list(db.scalars(select(Invoice).where(Invoice.public_id.in_(ids))))
    visa = method(db, "4242")
    review = submit(
        client, chosen, key=key.group(1), token=token.group(1), action="review",
        method_id=visa.public_id,
    )  # fmt: skip
    assert review.status_code == 200, review.get_data(as_text=True)
    confirmed = submit(
        client, chosen, key=key.group(1), token=token.group(1), action="confirm",
        method_id=visa.public_id,
    )  # fmt: skip
    assert confirmed.status_code in (302, 303), confirmed.get_data(as_text=True)
    assert "/portal/payments/group/" in confirmed.headers["Location"]


def test_a_balance_held_only_by_disputes_offers_no_pay_balance(
    signed_in: Auth, db: Session
) -> None:
    east = account_named(db, "Acme East")
    make_invoice(db, east, "40.00", due=-3, currency="EUR", status=InvoiceStatus.DISPUTED)
    page = signed_in.client.get("/portal/dashboard").get_data(as_text=True)
    assert "Also owed in other currencies" in page  # owed, and shown
    assert _pay_links(signed_in.client) == [("/portal/payment?balance=USD", "Pay balance")]
