"""The automatic payments page: who may turn it on, change, turn off and skip; what is refused
(and how it says so); the audit trail; the invoice page's "Paid automatically on"."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import (
    AuditEvent,
    AutopaySetting,
    AutopayTiming,
    BillingAccount,
    Company,
    PaymentMethod,
)
from tests.conftest import Auth, QueryCounter, csrf_token, readable, user_by_email
from tests.factories import make_invoice, make_payment_method

PAGE = "/portal/autopay"


def account(db: Session, name: str) -> BillingAccount:
    with tenancy.system(db):
        return db.scalars(select(BillingAccount).where(BillingAccount.name == name)).one()


def card(db: Session, last4: str = "4242") -> PaymentMethod:
    with tenancy.system(db):
        return db.scalars(
            select(PaymentMethod).where(
                PaymentMethod.last4 == last4, PaymentMethod.removed_at.is_(None)
            )
        ).first()  # type: ignore[return-value]


def setting(db: Session, acct: BillingAccount) -> AutopaySetting | None:
    with tenancy.system(db):
        return db.scalar(
            select(AutopaySetting)
            .where(AutopaySetting.billing_account_id == acct.id)
            .execution_options(populate_existing=True)
        )


def events(db: Session, name: str) -> list[AuditEvent]:
    with tenancy.system(db):
        return list(db.scalars(select(AuditEvent).where(AuditEvent.name == name)))


def save(client: FlaskClient, acct: BillingAccount, **form: str) -> object:
    data = {"csrf_token": csrf_token(client, PAGE), "timing": "due_date", "notice": "3", **form}
    return client.post(f"{PAGE}/{acct.public_id}", data=data)


def test_an_admin_turns_autopay_on_changes_it_and_turns_it_off(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in()
    west = account(db, "Acme West")
    visa = card(db)
    page = client.get(PAGE)
    assert page.status_code == 200
    text = readable(page.get_data(as_text=True))
    assert "Automatic payments" in text and "Acme West" in text and "Acme East" in text
    done = save(client, west, method=visa.public_id)
    assert done.status_code == 303  # type: ignore[attr-defined]
    on = setting(db, west)
    assert on is not None and on.enabled and on.timing is AutopayTiming.DUE_DATE
    assert "Visa ending 4242, on the due date" in readable(client.get(PAGE).get_data(as_text=True))
    save(client, west, method=visa.public_id, timing="after_issue", days="14")
    on = setting(db, west)
    assert on is not None and on.timing is AutopayTiming.AFTER_ISSUE and on.days_after_issue == 14
    page_text = readable(client.get(PAGE).get_data(as_text=True))
    assert "14 days after the invoice is issued" in page_text
    save(client, west, method=visa.public_id, timing="after_issue", days="14")  # the same: no event
    token = csrf_token(client, PAGE)
    off = client.post(f"{PAGE}/{west.public_id}/off", data={"csrf_token": token})
    assert off.status_code == 303
    assert setting(db, west).enabled is False  # type: ignore[union-attr]
    assert len(events(db, "Portal.AutopayEnabled")) == 1
    assert len(events(db, "Portal.AutopayChanged")) == 1
    assert len(events(db, "Portal.AutopayDisabled")) == 1
    activity = readable(client.get("/portal/activity").get_data(as_text=True))
    assert "Automatic payments turned on" in activity


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"timing": "weekly"}, "Choose when to pay"),
        ({"timing": "after_issue", "days": "91"}, "Enter a number of days from 0 to 90"),
        ({"timing": "after_issue", "days": "-1"}, "Enter a number of days from 0 to 90"),
        ({"timing": "after_issue", "days": "\uff11"}, "Enter a number of days from 0 to 90"),
        ({"notice": "5"}, "Choose how many days before a charge"),
        ({"method": "pm_nothing"}, "Choose one of your saved payment methods"),
    ],
)
def test_bad_input_is_refused_with_a_sentence(
    client: FlaskClient, auth: Auth, db: Session, form: dict[str, str], message: str
) -> None:
    auth.sign_in()
    west = account(db, "Acme West")
    answer = save(client, west, **{"method": card(db).public_id, **form})
    assert answer.status_code == 422  # type: ignore[attr-defined]
    assert message in readable(answer.get_data(as_text=True))  # type: ignore[attr-defined]
    assert setting(db, west) is None


def test_a_member_manages_only_their_accounts_with_their_own_method(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    member = user_by_email(db, "ap@acme.test")  # granted Acme West only
    with tenancy.system(db):
        acme = db.get(Company, member.company_id)
    assert acme is not None
    own = make_payment_method(db, acme, last4="1111", user=member)
    db.commit()
    auth.sign_in("ap@acme.test")
    west, east = account(db, "Acme West"), account(db, "Acme East")
    text = readable(client.get(PAGE).get_data(as_text=True))
    assert "Acme West" in text and "Acme East" not in text
    refused = save(client, west, method=card(db).public_id)  # the company's card, not theirs
    assert refused.status_code == 403  # type: ignore[attr-defined]
    assert setting(db, west) is None
    assert save(client, east, method=own.public_id).status_code == 404  # type: ignore[attr-defined]
    assert save(client, west, method=own.public_id).status_code == 303  # type: ignore[attr-defined]
    assert setting(db, west).consented_by_user_id == member.id  # type: ignore[union-attr]


def test_a_member_without_a_method_of_their_own_is_told_who_can(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in("ap@acme.test")
    west = account(db, "Acme West")
    text = readable(client.get(PAGE).get_data(as_text=True))
    assert "Only an administrator, or a member with a payment method they added" in text
    refused = save(client, west, method=card(db).public_id)
    assert refused.status_code == 403  # type: ignore[attr-defined]
    assert "Only an administrator" in readable(refused.get_data(as_text=True))  # type: ignore[attr-defined]
    token = csrf_token(client, PAGE)
    assert (
        client.post(f"{PAGE}/{west.public_id}/off", data={"csrf_token": token}).status_code == 404
    )


def test_the_invoice_page_says_when_it_is_paid_automatically_and_skip_stops_it(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in()
    west = account(db, "Acme West")
    invoice = make_invoice(db, west, "80.00", due=5, number="AUTO-1")
    db.commit()
    save(client, west, method=card(db).public_id)
    shown = readable(client.get(f"/portal/invoices/{invoice.public_id}").get_data(as_text=True))
    due = invoice.due_date
    assert f"Paid automatically on {due.strftime('%b')} {due.day}, {due.year}" in shown
    listed = readable(client.get(PAGE).get_data(as_text=True))
    assert "Upcoming automatic charges" in listed and "AUTO-1" in listed
    token = csrf_token(client, PAGE)
    skipped = client.post(f"{PAGE}/invoices/{invoice.public_id}/skip", data={"csrf_token": token})
    assert skipped.status_code == 303
    again = client.post(f"{PAGE}/invoices/{invoice.public_id}/skip", data={"csrf_token": token})
    assert again.status_code == 303
    assert "already skipped" in readable(client.get(PAGE).get_data(as_text=True))
    shown = readable(client.get(f"/portal/invoices/{invoice.public_id}").get_data(as_text=True))
    assert "Paid automatically" not in shown
    assert len(events(db, "Portal.AutopaySkipped")) == 1


def test_the_page_costs_the_same_however_many_invoices_it_lists(
    client: FlaskClient, auth: Auth, db: Session, count_queries: QueryCounter
) -> None:
    auth.sign_in()
    west, east = account(db, "Acme West"), account(db, "Acme East")
    for acct in (west, east):
        assert save(client, acct, method=card(db).public_id).status_code == 303  # type: ignore[attr-defined]
    client.get(PAGE)
    count_queries.statements.clear()
    assert client.get(PAGE).status_code == 200
    before = count_queries.count
    for n in range(6):
        make_invoice(db, west if n % 2 else east, "10.00", due=n + 1, number=f"MANY-{n}")
    db.commit()
    count_queries.statements.clear()
    text = readable(client.get(PAGE).get_data(as_text=True))
    assert "MANY-5" in text and "MANY-0" in text
    assert count_queries.count == before, count_queries.statements
    assert before <= 12, count_queries.statements


@pytest.mark.parametrize("field", ["days", "notice"])
def test_a_number_too_long_to_read_is_refused_with_a_sentence(
    client: FlaskClient, auth: Auth, db: Session, field: str
) -> None:
    auth.sign_in()
    west = account(db, "Acme West")
    form = {"method": card(db).public_id, "timing": "after_issue", "days": "1", field: "0" * 5000}
    refused = save(client, west, **form)
    assert refused.status_code == 422  # type: ignore[attr-defined]
    assert setting(db, west) is None
