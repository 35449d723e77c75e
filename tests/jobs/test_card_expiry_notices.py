"""Cards about to expire: the hourly job tells those who may manage each card (the one who
added it and the company's admins), once per card and expiry and once more in its last week,
as each chose, through a real SMTP server (both backends)."""

from __future__ import annotations

from datetime import date, timedelta

from flask import Flask
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import NotificationChannel, NotificationTopic, PaymentMethodKind, Role
from portal.runtime import SCHEDULES, SEND_CARD_EXPIRY_NOTICES
from portal.services import notifications, payment_methods
from tests.conftest import Inbox
from tests.factories import make_company, make_payment_method, make_user
from tests.jobs.test_reminders import rows, run_outbox, text_of, to
from workers import jobs

CARD = NotificationTopic.CARD_EXPIRING


def run_twice(app: Flask) -> list[dict[str, int]]:
    with app.app_context():
        return [jobs.send_card_expiry_notices(), jobs.send_card_expiry_notices()]


def test_the_job_is_a_recurring_schedule() -> None:
    assert SCHEDULES["card_expiry"][1] == SEND_CARD_EXPIRY_NOTICES


def test_run_twice_it_mails_once_per_card_to_who_may_manage_it(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    today: date = app.extensions["portal.clock"].today()
    soon = today + timedelta(days=20)
    company = make_company(db, "Expiring Ltd", accounts=("West",))
    admin = make_user(db, company, "boss@expiring.test")
    quiet = make_user(db, company, "quiet@expiring.test")
    clerk = make_user(
        db, company, "clerk@expiring.test", role=Role.CUSTOMER, accounts=company.billing_accounts
    )
    other = make_user(
        db, company, "other@expiring.test", role=Role.CUSTOMER, accounts=company.billing_accounts
    )
    clerks = make_payment_method(
        db, company, last4="1111", user=clerk, expires=(soon.month, soon.year)
    )
    make_payment_method(db, company, last4="2222", user=admin)  # years away: nothing
    bank = make_payment_method(db, company, last4="3333", user=admin, expires=(1, 2001))
    with tenancy.system(db):
        bank.kind, bank.brand = PaymentMethodKind.BANK_ACCOUNT, "bank"  # never expires
        notifications.set_preferences(db, quiet, {(CARD, NotificationChannel.EMAIL): False})
    db.commit()

    first, second = run_twice(app)
    assert first["failed"] == second["failed"] == 0
    assert first["notified"] == 3 and second["notified"] == 0
    assert run_outbox(app) > 0
    assert run_outbox(app) == 0
    run_twice(app)
    assert run_outbox(app) == 0

    mails = smtp.messages
    assert to(mails, "boss@expiring.test") == ["Card expiring soon"]
    assert to(mails, "clerk@expiring.test") == ["Card expiring soon"]
    assert to(mails, "other@expiring.test") == []  # neither added it nor an admin
    assert to(mails, "quiet@expiring.test") == []  # e-mail off: the centre's row only
    assert [(n.in_portal, n.by_email) for n in rows(db, quiet, CARD)] == [(True, False)]
    assert rows(db, other, CARD) == []
    end = payment_methods.expires_on(clerks)
    assert end is not None
    [row] = rows(db, clerk, CARD)
    assert row.key == f"card:{clerks.public_id}:{end:%Y-%m}"
    [mail] = [m for m in mails if m["To"] == "clerk@expiring.test"]
    body = text_of(mail)
    assert "Visa ending 1111 expires at the end of" in body.replace("\u2066", "").replace(
        "\u2068", ""
    ).replace("\u2069", "")
    assert "http://localhost/portal/payment-methods" in body
    assert mail["List-Unsubscribe"].startswith("<http://localhost/unsubscribe/")

    # In its last week, once more (once, however often the job runs); after that nothing.
    clock = app.extensions["portal.clock"]
    clock.advance(end - today - timedelta(days=3))
    run_twice(app)
    run_outbox(app)
    clock.advance(timedelta(days=10))
    run_twice(app)
    run_outbox(app)
    assert to(smtp.messages, "clerk@expiring.test") == ["Card expiring soon"] * 2
    assert sorted(n.key for n in rows(db, clerk, CARD)) == [
        f"card:{clerks.public_id}:{end:%Y-%m}",
        f"card:{clerks.public_id}:{end:%Y-%m}:last",
    ]


def test_an_expired_card_is_told_once_in_its_own_words(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    company = make_company(db, "Expired Ltd", accounts=("Main",))
    make_user(db, company, "boss@expired.test")
    make_payment_method(db, company, last4="9999", expires=(1, 2020))
    db.commit()
    run_twice(app)
    run_outbox(app)
    assert to(smtp.messages, "boss@expired.test") == ["Your card has expired"]
