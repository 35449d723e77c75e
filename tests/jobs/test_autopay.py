"""Autopay: the hourly job walks an invoice from notice to charge to receipt, retries a failing
card on day +3 and +7 and stops, passes a disputed invoice over, and charges once however often
or concurrently it runs; turning off by a removed method or a lost consent is told.

The clock walk runs through a real Redis and an RQ worker (this process's, so it shares the
test clock) on PostgreSQL; the rest runs the job as a worker does (`workers.jobs`), in the
test's transaction, on both backends, its mail through the outbox to a real SMTP server; two
worker processes at once are at the end (the parts of tests/jobs/test_faults.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from email.message import Message

import pytest
from flask import Flask
from rq import SimpleWorker
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import clock as portal_clock
from portal import flags, tenancy
from portal.models import (
    AutopayOff,
    AutopaySetting,
    AutopayStep,
    AutopayStepKind,
    BillingAccount,
    Company,
    Invoice,
    InvoiceStatus,
    Notification,
    NotificationTopic,
    Payment,
    PaymentAllocation,
    PaymentMethod,
    PaymentStatus,
    PortalUser,
    Role,
)
from portal.runtime import RUN_AUTOPAY, Runtime
from portal.services import audit, autopay, payment_methods, users
from tests.conftest import BACKENDS, Backend, Inbox, csrf_token
from tests.factories import (
    make_company,
    make_invoice,
    make_payment,
    make_payment_method,
    make_user,
)
from tests.jobs.test_faults import Portal
from tests.jobs.test_payment_jobs import rq_jobs
from tests.web.test_flags import switch
from tests.work import hold_recurring
from workers import jobs
from workers.queue import RQJobQueue

__all__ = ["rq_jobs"]

# On PostgreSQL only (never a skip: CI fails a skipped test); no test where it is left out.
ON_POSTGRESQL = [name for name in BACKENDS if name == "postgresql"]
AUTOPAY = NotificationTopic.AUTOPAY
REQUEST = audit.RequestInfo()


@pytest.fixture
def runtime(app: Flask) -> Iterator[Runtime]:
    with app.app_context():
        yield app.extensions["portal.runtime"]


class Shop:
    """A company of its own: one account, an admin who turns autopay on with a card, a member
    granted the account, and one invoice due in `due` days."""

    def __init__(
        self,
        db: Session,
        *,
        declines: bool = False,
        due: int = 10,
        notice: int = 3,
        name: str = "Autopaid Ltd",
    ) -> None:
        self.db = db
        self.company: Company = make_company(db, name)
        self.account: BillingAccount = self.company.billing_accounts[0]
        self.admin = make_user(db, self.company, f"boss@{name.split()[0].lower()}.test")
        self.member = make_user(
            db,
            self.company,
            f"clerk@{name.split()[0].lower()}.test",
            role=Role.CUSTOMER,
            accounts=[self.account],
        )
        self.card = make_payment_method(db, self.company, declines=declines, user=self.admin)
        self.invoice = make_invoice(db, self.account, "100.00", due=due, number="AP-1")
        self.setting = self.turn_on(self.admin, self.card, notice=notice)

    def turn_on(
        self, user: PortalUser, method: PaymentMethod, *, notice: int = 3, timing: str = "due_date"
    ) -> AutopaySetting:
        with tenancy.system(self.db):
            outcome = autopay.turn_on(
                self.db,
                user,
                self.account,
                autopay.Choice(method, timing, "0", str(notice)),
                today=today(),
                now=now(),
                gateway_name="sandbox",
                request=REQUEST,
            )
        assert isinstance(outcome, AutopaySetting), outcome
        return outcome


def today() -> date:
    """The tests' "today" before any clock walk (the factories' clock, outside the app)."""
    return portal_clock.today()


def now() -> datetime:
    return portal_clock.now()


def run(app: Flask) -> dict[str, int]:
    with app.app_context():
        return jobs.run_autopay()


def run_outbox(app: Flask) -> int:
    return int(app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now()))


def text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("no text part")


def subjects(inbox: Inbox, to: str) -> list[str]:
    return [str(m["Subject"]) for m in inbox.messages if m["To"] == to]


def autopay_payments(db: Session, invoice: Invoice) -> list[Payment]:
    with tenancy.system(db):
        return list(
            db.scalars(
                select(Payment)
                .join(PaymentAllocation, PaymentAllocation.payment_id == Payment.id)
                .where(
                    PaymentAllocation.invoice_id == invoice.id,
                    Payment.idempotency_key.like("%:autopay:%"),
                )
                .order_by(Payment.id)
                .execution_options(populate_existing=True)
            )
        )


def steps(db: Session, invoice: Invoice) -> list[tuple[str, int]]:
    with tenancy.system(db):
        return [
            (s.kind.value, s.attempt)
            for s in db.scalars(
                select(AutopayStep)
                .where(AutopayStep.invoice_id == invoice.id)
                .order_by(AutopayStep.id)
            )
        ]


def fresh(db: Session, invoice: Invoice) -> Invoice:
    with tenancy.system(db):
        db.refresh(invoice)
    return invoice


def skip_link(message: Message) -> str:
    found = re.search(r"http://localhost(/autopay/skip/\S+)", text_of(message))
    assert found, text_of(message)
    return found.group(1)


# the clock walk: a real RQ worker, PostgreSQL ------------------------------------------------


@pytest.mark.parametrize("backend", ON_POSTGRESQL, indirect=True)  # the worker's walk
def test_the_clock_walks_an_invoice_from_notice_to_charge_to_receipt(
    app: Flask, backend: Backend, db: Session, rq_jobs: RQJobQueue, smtp: Inbox
) -> None:
    clock = app.extensions["portal.clock"]
    shop = Shop(db, due=10, notice=3)
    db.commit()
    hold_recurring(app, but=())
    worker = SimpleWorker([rq_jobs.queue], connection=rq_jobs.queue.connection)

    def hourly(copy: str) -> None:
        rq_jobs.enqueue(RUN_AUTOPAY, job_id=f"autopay-{copy}")
        with app.app_context():
            worker.work(burst=True)  # the run, then the mail it handed off

    hourly("issued")
    assert smtp.messages == [] and steps(db, shop.invoice) == []  # ten days out: nothing yet

    clock.advance(timedelta(days=7))  # three days before the due date: the notice
    hourly("notice")
    assert subjects(smtp, "boss@autopaid.test") == ["Invoice AP-1 will be paid automatically"]
    notice = smtp.messages[0]
    body = text_of(notice)
    assert "We will charge $100.00 to Visa •••• 4242 on" in body
    assert skip_link(notice).startswith("/autopay/skip/")
    assert notice["List-Unsubscribe"].startswith("<http://localhost/unsubscribe/")
    assert autopay_payments(db, shop.invoice) == []
    hourly("notice-again")
    assert len(smtp.messages) == 1  # told once

    clock.advance(timedelta(days=3))  # the due date: the charge, off-session, then the receipt
    hourly("charge")
    hourly("charge-again")
    (paid,) = autopay_payments(db, shop.invoice)
    assert paid.status is PaymentStatus.SUCCEEDED and paid.amount == 10000
    assert paid.scheduled_for == clock.today()  # run as a scheduled payment: off-session
    assert fresh(db, shop.invoice).status is InvoiceStatus.PAID
    receipts = [s for s in subjects(smtp, "boss@autopaid.test") if s.startswith("Receipt")]
    assert receipts == [f"Receipt {paid.reference}: payment of $100.00"]
    assert steps(db, shop.invoice) == [("notice", 0), ("charge", 1)]


# the job in the test's transaction, both backends ----------------------------------------------


def test_a_failing_card_is_retried_on_day_3_and_7_then_stops_and_says_so(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    clock = app.extensions["portal.clock"]
    shop = Shop(db, declines=True, due=3, notice=3)
    db.commit()
    run(app)  # the notice
    clock.advance(timedelta(days=3))
    run(app)
    run(app)  # the same day again: no second attempt
    (first,) = autopay_payments(db, shop.invoice)
    assert first.status is PaymentStatus.FAILED
    assert run_outbox(app) > 0
    boss = subjects(smtp, "boss@autopaid.test")
    assert "Automatic payment of invoice AP-1 failed" in boss
    failed = next(
        m for m in smtp.messages if m["Subject"] == "Automatic payment of invoice AP-1 failed"
    )
    retry_day = (clock.today() + timedelta(days=3)).strftime("%b %-d, %Y")
    assert f"We will try again on {retry_day}." in " ".join(text_of(failed).split())

    clock.advance(timedelta(days=2))
    run(app)
    assert len(autopay_payments(db, shop.invoice)) == 1  # day +2: not yet
    clock.advance(timedelta(days=1))
    run(app)
    run(app)
    assert len(autopay_payments(db, shop.invoice)) == 2  # day +3: the second attempt
    clock.advance(timedelta(days=3))
    run(app)
    assert len(autopay_payments(db, shop.invoice)) == 2  # day +6: not yet
    clock.advance(timedelta(days=1))
    run(app)
    run(app)
    clock.advance(timedelta(days=30))
    run(app)  # a month on: nothing more
    made = autopay_payments(db, shop.invoice)
    assert [p.status for p in made] == [PaymentStatus.FAILED] * 3
    assert [p.idempotency_key.rpartition(":autopay:")[2] for p in made] == [
        f"{shop.invoice.public_id}:{n}" for n in (1, 2, 3)
    ]
    assert steps(db, shop.invoice) == [
        ("notice", 0),
        ("charge", 1),
        ("charge", 2),
        ("charge", 3),
        ("stopped", 3),
    ]
    run_outbox(app)
    boss = subjects(smtp, "boss@autopaid.test")
    assert boss.count("Automatic payment of invoice AP-1 failed") == 2
    assert boss.count("Automatic payment of invoice AP-1 stopped") == 1
    assert boss.count("Payment failed: $100.00") == 3  # each attempt's own failure mail
    stopped = next(
        m for m in smtp.messages if m["Subject"] == "Automatic payment of invoice AP-1 stopped"
    )
    assert "We stopped trying" in text_of(stopped) and "pay it yourself" in text_of(stopped)


def test_a_disputed_invoice_is_skipped_not_charged(app: Flask, db: Session, smtp: Inbox) -> None:
    clock = app.extensions["portal.clock"]
    shop = Shop(db, due=2, notice=3)
    db.commit()
    run(app)  # the notice
    with tenancy.system(db):
        shop.invoice.status = InvoiceStatus.DISPUTED
    db.commit()
    clock.advance(timedelta(days=2))
    run(app)
    run(app)
    clock.advance(timedelta(days=10))
    run(app)
    assert autopay_payments(db, shop.invoice) == []
    assert steps(db, shop.invoice) == [("notice", 0), ("disputed", 1)]
    run_outbox(app)
    assert subjects(smtp, "boss@autopaid.test").count("Invoice AP-1 was not charged") == 1


def test_the_same_days_job_run_twice_charges_once_and_a_manual_payment_leaves_less(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    clock = app.extensions["portal.clock"]
    shop = Shop(db, due=0, notice=0)
    second = make_invoice(db, shop.account, "50.00", balance="20.00", due=0, number="AP-2")
    held = make_invoice(db, shop.account, "70.00", due=0, number="AP-3")
    make_payment(db, held, status=PaymentStatus.PROCESSING, user=shop.admin)  # on its way
    db.commit()
    run(app)  # notice 0 days before: told today, charged today
    first = run(app)
    again = run(app)
    assert first["failed"] == again["failed"] == 0
    (paid,) = autopay_payments(db, shop.invoice)
    (rest,) = autopay_payments(db, second)
    assert paid.status is rest.status is PaymentStatus.SUCCEEDED
    assert rest.amount == 2000  # only what was left after the manual payment
    assert autopay_payments(db, held) == []  # held by a payment on its way: waits
    clock.advance(timedelta(hours=1))
    run(app)
    assert len(autopay_payments(db, shop.invoice)) == 1


def test_the_skip_link_works_once_and_refuses_tampered_or_expired(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    clock = app.extensions["portal.clock"]
    shop = Shop(db, due=3, notice=3)
    other = make_invoice(db, shop.account, "30.00", due=3, number="AP-9")
    db.commit()
    run(app)
    run_outbox(app)
    links = {
        re.search(r"AP-\d", str(m["Subject"])).group(0): skip_link(m)  # type: ignore[union-attr]
        for m in smtp.messages
        if m["To"] == "boss@autopaid.test"
    }
    client = app.test_client()
    asked = client.get(links["AP-1"])
    assert asked.status_code == 200
    assert "Skip the automatic payment of invoice AP-1" in asked.get_data(as_text=True)
    tampered = links["AP-1"][:-3] + ("abc" if not links["AP-1"].endswith("abc") else "xyz")
    token = csrf_token(client, links["AP-1"])
    assert client.get(tampered).status_code == 404
    assert client.post(tampered, data={"csrf_token": token}).status_code == 404
    done = client.post(links["AP-1"], data={"csrf_token": token})
    assert done.status_code == 200
    assert "AP-1 will not be paid automatically" in done.get_data(as_text=True)
    assert client.post(links["AP-1"], data={"csrf_token": token}).status_code == 409  # once
    with tenancy.system(db):
        skipped = db.scalars(select(Notification).where(Notification.topic == AUTOPAY)).all()
    assert skipped
    clock.advance(timedelta(days=4))  # past AP-9's charge day: its link has expired
    assert client.get(links["AP-9"]).status_code == 404
    run(app)
    assert autopay_payments(db, shop.invoice) == []  # skipped: never charged
    (charged,) = autopay_payments(db, other)
    assert steps(db, shop.invoice) == [("notice", 0), ("skipped", 0)]
    assert charged.status is PaymentStatus.SUCCEEDED


def test_removing_the_method_turns_autopay_off_with_a_notice(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db, due=10)
    tenancy.bind(db, tenancy.scope_for_user(shop.admin))  # as the admin's request is
    outcome = payment_methods.remove(
        db, shop.admin, shop.card, now=now(), request=REQUEST, gateway_name="sandbox"
    )
    assert outcome is None  # autopay never refuses the removal
    assert shop.setting.enabled is False
    assert shop.setting.off_reason is AutopayOff.METHOD_REMOVED
    db.commit()
    run(app)
    run(app)
    run_outbox(app)
    for address in ("boss@autopaid.test",):
        assert subjects(smtp, address) == ["Automatic payments turned off"]
    off = smtp.messages[0]
    assert "its payment method Visa •••• 4242 was removed" in " ".join(text_of(off).split())


def test_a_consent_lost_by_demotion_or_deactivation_turns_autopay_off(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db, due=10)
    other_admin = make_user(db, shop.company, "second@autopaid.test")
    tenancy.bind(db, tenancy.scope_for_user(other_admin))  # as the other admin's request is
    # The member turns it on with a card of their own: theirs to manage.
    own = make_payment_method(db, shop.company, last4="1111", user=shop.member)
    shop.turn_on(shop.member, own)
    assert shop.setting.consented_by_user_id == shop.member.id
    # Their grant taken away: they may no longer manage it.
    refusal = users.change_access(
        db, other_admin, shop.member, Role.CUSTOMER, [], request=REQUEST, now=now()
    )
    assert refusal is None
    assert shop.setting.enabled is False
    assert shop.setting.off_reason is AutopayOff.CONSENT_LOST
    db.commit()
    run(app)
    run(app)
    run_outbox(app)
    off = ["Automatic payments turned off"]
    for address in ("second@autopaid.test", "boss@autopaid.test", "clerk@autopaid.test"):
        assert subjects(smtp, address) == off, address  # the admins and who consented
    assert "can no longer manage it" in text_of(smtp.messages[0])
    # An admin turns it on again, then is deactivated.
    shop.turn_on(shop.admin, shop.card)
    assert users.deactivate(db, other_admin, shop.admin, now=now(), request=REQUEST) is None
    assert shop.setting.enabled is False
    db.commit()
    run(app)
    run_outbox(app)
    assert subjects(smtp, "second@autopaid.test") == off * 2
    assert subjects(smtp, "boss@autopaid.test") == off  # deactivated: told no more


def test_autopay_waits_while_online_payment_is_off(app: Flask, db: Session, smtp: Inbox) -> None:
    shop = Shop(db, due=0, notice=0)
    db.commit()
    switch(db, flags.PAYMENT, False)
    assert run(app) == {"settings": 0, "steps": 0, "failed": 0}
    assert steps(db, shop.invoice) == []
    switch(db, flags.PAYMENT, True)
    run(app)
    run(app)
    (paid,) = autopay_payments(db, shop.invoice)
    assert paid.status is PaymentStatus.SUCCEEDED


def test_replace_method_moves_every_setting(db: Session) -> None:
    shop = Shop(db)
    new = make_payment_method(db, shop.company, last4="5555", user=shop.admin)
    with tenancy.system(db):
        assert autopay.replace_method(db, shop.card, new, shop.admin, now=now()) == 1
        db.refresh(shop.setting)
        assert shop.setting.payment_method_id == new.id
        assert autopay.replace_method(db, shop.card, new, shop.admin, now=now()) == 0


# real worker processes, twice at once ------------------------------------------------------


@pytest.mark.parametrize("database", ON_POSTGRESQL, indirect=True)  # row locks between processes
def test_the_job_twice_at_once_on_two_workers_charges_once(portal: Portal) -> None:

    def prepare(session: Session) -> None:
        shop = Shop(session, due=0, notice=0, name="Twice Ltd")
        session.flush()
        with tenancy.system(session):
            step = autopay.claim(  # told yesterday: charged today
                session, shop.invoice, AutopayStepKind.NOTICE, 0, today(), None
            )
            assert step is not None

    portal.write(prepare)
    portal.workers.start()
    portal.workers.start()
    portal.until(
        "two workers listening",
        lambda: portal.workers.output().count("Listening on portal") == 2,
        60,
    )
    queue = RQJobQueue(portal.redis.url)
    for copy in ("a", "b"):
        queue.enqueue(RUN_AUTOPAY, job_id=f"autopay-{copy}")

    def charged() -> list[tuple[str, str]]:
        return portal.read(
            lambda s: [
                (p.status.value, p.idempotency_key)
                for p in s.scalars(select(Payment).where(Payment.idempotency_key.like("%autopay%")))
            ]
        )

    portal.until("both runs finished", lambda: len(queue.queue.finished_job_registry) >= 2, 60)
    portal.until("the charge succeeded", lambda: [s for s, _k in charged()] == ["succeeded"], 30)
    portal.still("once", lambda: len(charged()) == 1, 2)

    def receipts() -> int:
        return sum(str(m["Subject"]).startswith("Receipt") for m in portal.mailbox.messages)

    portal.until("the receipt", lambda: receipts() == 1, 30)
    portal.still("one receipt", lambda: receipts() == 1, 2)
    queue.queue.connection.close()
