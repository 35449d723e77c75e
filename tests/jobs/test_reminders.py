"""The recurring reminders and monthly statements, and the payment and statement notices, told
once per user and event, as each user chose, through a real SMTP server (both backends).

The jobs run here, in the test's transaction, as a worker runs them (`workers.jobs`), and the
mail they hand off goes through the outbox's `run_work` (`flask jobs drain`); the same through
real RQ worker processes, twice at once, is at the end (the parts of tests/jobs/test_faults.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from email.message import Message

import pytest
from flask import Flask
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import (
    BillingAccount,
    Company,
    Invoice,
    InvoiceStatus,
    Notification,
    NotificationChannel,
    NotificationRun,
    NotificationTopic,
    PaymentStatus,
    PortalUser,
    Role,
    Statement,
    StatementFormat,
    StatementState,
    UserStatus,
)
from portal.notifications import messages, reminders
from portal.payments import mail as payment_mail
from portal.runtime import SEND_REMINDERS, Runtime
from portal.services import audit, notifications
from portal.statements import service as statements
from tests.conftest import Inbox, QueryCounter
from tests.factories import make_company, make_invoice, make_payment, make_user
from tests.jobs.test_faults import Portal
from workers import jobs
from workers.queue import RQJobQueue

DUE = NotificationTopic.PAYMENT_DUE
OVERDUE = NotificationTopic.PAYMENT_OVERDUE
ISSUED = NotificationTopic.INVOICE_ISSUED
EMAIL, PORTAL = NotificationChannel.EMAIL, NotificationChannel.PORTAL


@pytest.fixture
def runtime(app: Flask) -> Iterator[Runtime]:
    with app.app_context():
        yield app.extensions["portal.runtime"]


def run_outbox(app: Flask) -> int:
    return int(app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now()))


def text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("no text part")


def to(messages: list[Message], address: str) -> list[str]:
    """The subjects of the mails to `address`, sorted."""
    return sorted(str(m["Subject"]) for m in messages if m["To"] == address)


def rows(db: Session, user: PortalUser, *topics: NotificationTopic) -> list[Notification]:
    with tenancy.system(db):
        return list(
            db.scalars(
                select(Notification)
                .where(Notification.user_id == user.id, Notification.topic.in_(topics))
                .order_by(Notification.key)
            )
        )


class Shop:
    """A company of its own: West and East accounts, an admin, a restricted user (West only)
    and a second admin who turned the due-date e-mails off."""

    def __init__(self, db: Session) -> None:
        self.company: Company = make_company(db, "Reminded Ltd", accounts=("West", "East"))
        west, east = sorted(self.company.billing_accounts, key=lambda a: a.name != "West")
        self.west: BillingAccount = west
        self.east: BillingAccount = east
        self.admin = make_user(db, self.company, "boss@reminded.test")
        self.clerk = make_user(
            db, self.company, "clerk@reminded.test", role=Role.CUSTOMER, accounts=[west]
        )
        self.quiet = make_user(db, self.company, "quiet@reminded.test")
        with tenancy.system(db):
            notifications.set_preferences(db, self.quiet, {(DUE, EMAIL): False})


def remind_twice(app: Flask) -> list[dict[str, int]]:
    with app.app_context():
        return [jobs.send_reminders(), jobs.send_reminders()]


def test_the_reminders_job_run_twice_mails_once_per_user_and_invoice(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db)
    soon_west = make_invoice(db, shop.west, "100.00", due=3, number="W-SOON")
    soon_east = make_invoice(db, shop.east, "200.00", due=3, number="E-SOON")
    late_east = make_invoice(db, shop.east, "300.00", due=-1, number="E-LATE")
    late_west = make_invoice(db, shop.west, "400.00", balance="150.00", due=-1, number="W-LATE")
    make_invoice(db, shop.west, "10.00", due=3, status=InvoiceStatus.DISPUTED, number="W-DISP")
    make_invoice(db, shop.west, "20.00", balance=0, due=3, number="W-PAID")
    make_invoice(db, shop.west, "30.00", due=3, status=InvoiceStatus.VOID, number="W-VOID")
    make_invoice(db, shop.west, "40.00", due=4, number="W-LATER")
    make_invoice(db, shop.east, "50.00", due=-30, number="E-OLD")  # overdue long ago: not new
    db.commit()

    first, second = remind_twice(app)
    assert first["failed"] == second["failed"] == 0
    assert first["notified"] > 0 and second["notified"] == 0
    assert run_outbox(app) > 0
    assert run_outbox(app) == 0
    remind_twice(app)
    assert run_outbox(app) == 0  # still nothing more

    mails = smtp.messages
    new = ["New invoice " + n for n in ("E-LATE", "E-OLD", "E-SOON", "W-LATE", "W-LATER", "W-SOON")]
    due = ["Invoice E-SOON is due soon", "Invoice W-SOON is due soon"]
    overdue = ["Invoice E-LATE is overdue", "Invoice W-LATE is overdue"]
    assert to(mails, "boss@reminded.test") == sorted(new + due + overdue)
    # the restricted user hears of West's invoices only
    assert to(mails, "clerk@reminded.test") == sorted(
        [
            "New invoice W-LATE",
            "New invoice W-LATER",
            "New invoice W-SOON",
            "Invoice W-SOON is due soon",
            "Invoice W-LATE is overdue",
        ]
    )
    # the e-mail of due-date reminders off: no such mail, the centre's rows nonetheless
    assert to(mails, "quiet@reminded.test") == sorted(new + overdue)
    shown = rows(db, shop.quiet, DUE)
    assert {(n.key, n.in_portal, n.by_email) for n in shown} == {
        (f"due:{soon_east.public_id}:{soon_east.due_date.isoformat()}", True, False),
        (f"due:{soon_west.public_id}:{soon_west.due_date.isoformat()}", True, False),
    }
    assert not any(m["To"] and m["To"].endswith("@acme.test") for m in mails)
    for message in mails:
        assert message["List-Unsubscribe"].startswith("<http://localhost/unsubscribe/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [late] = [m for m in mails if m["To"] == "boss@reminded.test" and "W-LATE is" in m["Subject"]]
    assert "$150.00 was due on" in text_of(late)  # what is still owed
    assert f"http://localhost/portal/invoices/{late_west.public_id}" in text_of(late)
    [overdue_row] = [n for n in rows(db, shop.admin, OVERDUE) if "E-LATE" in str(n.params)]
    assert overdue_row.key == f"overdue:{late_east.public_id}:{late_east.due_date.isoformat()}"


def test_overdue_is_told_once_not_daily_and_due_follows_the_users_days(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db)
    invoice = make_invoice(db, shop.west, "100.00", due=7, number="W-7")
    clock = app.extensions["portal.clock"]
    with tenancy.system(db):
        notifications.set_remind_days(db, shop.clerk, 7)
        # announced as new an hour ago: the reminders alone here
        db.add(
            NotificationRun(name=reminders.ISSUED_RUN, done_until=clock.now() + timedelta(hours=1))
        )
    db.commit()
    with app.app_context():
        jobs.send_reminders()
    run_outbox(app)
    assert to(smtp.messages, "clerk@reminded.test") == ["Invoice W-7 is due soon"]
    assert to(smtp.messages, "boss@reminded.test") == []  # three days before, not seven
    for _day in range(10):  # every day for ten days, hourly
        clock.advance(timedelta(days=1))
        with app.app_context():
            jobs.send_reminders()
            jobs.send_reminders()
        run_outbox(app)
    assert to(smtp.messages, "boss@reminded.test") == [
        "Invoice W-7 is due soon",
        "Invoice W-7 is overdue",
    ]
    assert to(smtp.messages, "clerk@reminded.test") == [
        "Invoice W-7 is due soon",
        "Invoice W-7 is overdue",
    ]
    assert invoice.public_id in rows(db, shop.admin, OVERDUE)[0].key


def test_a_due_reminder_the_job_missed_on_its_day_is_sent_the_next_day_once(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db)
    clock = app.extensions["portal.clock"]
    with tenancy.system(db):
        days = notifications.remind_days(db, shop.admin)
        db.add(
            NotificationRun(name=reminders.ISSUED_RUN, done_until=clock.now() + timedelta(days=9))
        )
    make_invoice(db, shop.west, "100.00", due=days, number="W-3")
    make_invoice(db, shop.west, "100.00", due=days + 2, number="W-5")  # not within the N days
    db.commit()
    clock.advance(timedelta(days=1))  # the job did not run on W-3's day
    for _hour in range(2):
        with app.app_context():
            jobs.send_reminders()
        run_outbox(app)
    assert to(smtp.messages, "boss@reminded.test") == ["Invoice W-3 is due soon"]
    clock.advance(timedelta(days=1))
    with app.app_context():
        jobs.send_reminders()
    run_outbox(app)
    assert to(smtp.messages, "boss@reminded.test") == [
        "Invoice W-3 is due soon",
        "Invoice W-5 is due soon",
    ]
    assert len(rows(db, shop.admin, DUE)) == 2


def test_due_dates_are_the_users_own_today(app: Flask, db: Session, smtp: Inbox) -> None:
    """At noon UTC it is already tomorrow in Kiritimati (UTC+14): a user there is reminded of
    the invoices due within three days of *their* today, a user on UTC of those due within
    three of UTC's (not of the one due in four)."""
    clock = app.extensions["portal.clock"]
    now = clock.now()
    noon = datetime.combine(now.date() + timedelta(days=1), time(12), tzinfo=UTC)
    clock.advance(noon - now)
    shop = Shop(db)
    with tenancy.system(db):
        shop.clerk.timezone = "Pacific/Kiritimati"
        db.add(NotificationRun(name=reminders.ISSUED_RUN, done_until=noon))
    utc_due = make_invoice(db, shop.west, "10.00", due=noon.date() + timedelta(days=3))
    far_due = make_invoice(db, shop.west, "20.00", due=noon.date() + timedelta(days=4))
    db.commit()
    with app.app_context():
        jobs.send_reminders()
    assert [n.params["invoice"] for n in rows(db, shop.admin, DUE)] == [utc_due.number]
    assert sorted(n.params["invoice"] for n in rows(db, shop.clerk, DUE)) == sorted(
        [utc_due.number, far_due.number]
    )


def test_new_invoices_are_those_created_since_the_last_run(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db)
    clock = app.extensions["portal.clock"]
    with tenancy.system(db):
        db.add(NotificationRun(name=reminders.ISSUED_RUN, done_until=clock.now()))
    old = make_invoice(db, shop.west, "10.00", due=30, number="W-OLD")
    with tenancy.system(db):
        old.created_at = clock.now() - timedelta(hours=1)  # before the last run finished
    db.commit()
    clock.advance(timedelta(minutes=1))
    fresh = make_invoice(db, shop.west, "20.00", due=30, number="W-NEW")
    with tenancy.system(db):
        fresh.created_at = clock.now()
    db.commit()
    started = clock.now()
    with app.app_context():
        jobs.send_reminders()
    assert [n.params["invoice"] for n in rows(db, shop.clerk, ISSUED)] == ["W-NEW"]
    with tenancy.system(db):
        done = db.get(NotificationRun, reminders.ISSUED_RUN, populate_existing=True)
    assert done is not None and started <= done.done_until <= clock.now()  # moved on
    run_outbox(app)
    assert to(smtp.messages, "clerk@reminded.test") == ["New invoice W-NEW"]


# the monthly statement ---------------------------------------------------------------------


def month_start(app: Flask, day: int) -> datetime:
    """Move the clock to 10:00 UTC on `day` of next month; that moment."""
    clock = app.extensions["portal.clock"]
    now = clock.now()
    first = (now.date().replace(day=1) + timedelta(days=32)).replace(day=day)
    moment = datetime.combine(first, time(10), tzinfo=UTC)
    clock.advance(moment - now)
    return moment


def test_the_monthly_statement_is_asked_for_and_told_once_per_month(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db)
    make_invoice(db, shop.west, "100.00", due=3, number="W-1")
    with tenancy.system(db):
        topic = NotificationTopic.MONTHLY_STATEMENT
        notifications.set_preferences(db, shop.admin, {(topic, EMAIL): True})
        notifications.set_preferences(db, shop.clerk, {(topic, PORTAL): True})
    db.commit()
    moment = month_start(app, 2)
    with app.app_context():
        outcomes = [jobs.send_monthly_statements(), jobs.send_monthly_statements()]
    assert outcomes[0]["asked"] >= 2 and "asked" not in outcomes[1]
    with tenancy.system(db):
        made = list(
            db.scalars(
                select(Statement)
                .where(Statement.company_id == shop.company.id)
                .order_by(Statement.requested_by_user_id)
            )
        )
    last = moment.date().replace(day=1) - timedelta(days=1)
    assert [(s.requested_by_user_id, s.period) for s in made] == [
        (shop.admin.id, last.strftime("%Y-%m")),
        (shop.clerk.id, last.strftime("%Y-%m")),  # the portal channel alone
    ]
    assert [s.account_ids for s in made] == [
        sorted([shop.west.id, shop.east.id]),
        [shop.west.id],
    ]
    run_outbox(app)
    with app.app_context():
        jobs.send_monthly_statements()
    run_outbox(app)
    db.expire_all()
    with tenancy.system(db):
        assert {
            s.state
            for s in db.scalars(select(Statement).where(Statement.id.in_([s.id for s in made])))
        } == {StatementState.READY}
    key = f"monthly:{last.strftime('%Y-%m')}"
    for user, shown, mailed in ((shop.admin, False, True), (shop.clerk, True, False)):
        [told] = rows(db, user, NotificationTopic.MONTHLY_STATEMENT)
        assert (told.key, told.in_portal, told.by_email) == (key, shown, mailed)
        assert told.link == "/portal/statements"
    assert rows(db, shop.quiet, NotificationTopic.MONTHLY_STATEMENT) == []
    assert rows(db, shop.admin, NotificationTopic.STATEMENT_READY) == []  # not twice
    [message] = [m for m in smtp.messages if m["To"].endswith("@reminded.test")]
    assert message["To"] == "boss@reminded.test"
    assert message["Subject"] == "Your monthly statement is ready"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # later that month, nothing more
    app.extensions["portal.clock"].advance(timedelta(days=1))
    with app.app_context():
        assert "asked" not in jobs.send_monthly_statements()
    app.extensions["portal.clock"].advance(timedelta(days=5))
    with app.app_context():
        assert jobs.send_monthly_statements() == {}  # not the first days of a month anywhere


# payment outcomes and statements ready, as the payer chose -------------------------------


def test_a_receipt_with_the_email_off_is_in_the_portal_only(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db)
    invoice = make_invoice(db, shop.west, "100.00", due=3)
    paid = make_payment(db, invoice, user=shop.quiet)
    with tenancy.system(db):
        receipt = NotificationTopic.PAYMENT_RECEIPT
        notifications.set_preferences(db, shop.quiet, {(receipt, EMAIL): False})
        payment_mail.notify(runtime, db, paid)
        payment_mail.notify(runtime, db, paid)  # a webhook delivered twice
    db.commit()
    assert run_outbox(app) == 0
    assert smtp.messages == []
    [told] = rows(db, shop.quiet, receipt)
    assert (told.in_portal, told.by_email) == (True, False)
    assert told.link == f"/portal/payments/{paid.public_id}"  # the receipt, in the portal
    assert told.params["reference"] == paid.reference


def test_a_receipt_and_a_failure_mail_once_with_the_unsubscribe_headers(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db)
    paid = make_payment(db, make_invoice(db, shop.west, "100.00"), user=shop.admin)
    failed = make_payment(
        db, make_invoice(db, shop.west, "60.00"), user=shop.admin, status=PaymentStatus.FAILED
    )
    with tenancy.system(db):
        for payment in (paid, failed, paid, failed):
            payment_mail.notify(runtime, db, payment)
    db.commit()
    assert run_outbox(app) == 2
    receipt, failure = sorted(smtp.messages, key=lambda m: str(m["Subject"]), reverse=True)
    assert receipt["Subject"] == f"Receipt {paid.reference}: payment of $100.00"
    assert failure["Subject"] == "Payment failed: $60.00"
    for message, topic in ((receipt, "Payment receipts"), (failure, "Failed payments")):
        assert message["To"] == "boss@reminded.test"
        assert message["List-Unsubscribe"].startswith("<http://localhost/unsubscribe/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text = text_of(message)
        assert f"“{topic}” e-mails are on for you" in text
        assert "http://localhost/unsubscribe/" in text
    assert f"http://localhost/portal/payments/{paid.public_id}" in text_of(receipt)
    told = rows(db, shop.admin, *payment_mail.TOPICS.values())
    assert sorted((n.topic, n.in_portal, n.by_email) for n in told) == [
        (NotificationTopic.PAYMENT_FAILED, True, True),
        (NotificationTopic.PAYMENT_RECEIPT, True, True),
    ]


def test_a_canceled_scheduled_payment_is_told_as_a_failed_payment_is(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db)
    failed_topic = NotificationTopic.PAYMENT_FAILED
    canceled = {
        user.email: make_payment(
            db,
            make_invoice(db, shop.west, "100.00", due=3),
            user=user,
            status=PaymentStatus.CANCELED,
        )
        for user in (shop.admin, shop.quiet, shop.clerk)
    }
    with tenancy.system(db):
        notifications.set_preferences(db, shop.quiet, {(failed_topic, EMAIL): False})
        shop.clerk.status = UserStatus.DISABLED
        for payment in (*canceled.values(), *canceled.values()):  # a job run twice
            payment_mail.notify_canceled(runtime, db, payment)
    db.commit()
    assert run_outbox(app) == 1
    [message] = smtp.messages
    assert message["To"] == "boss@reminded.test"
    assert message["Subject"] == "Scheduled payment canceled: $100.00"
    assert message["List-Unsubscribe"].startswith("<http://localhost/unsubscribe/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = text_of(message)
    assert "“Failed payments” e-mails are on for you" in text
    assert "http://localhost/unsubscribe/" in text
    [told] = rows(db, shop.admin, failed_topic)
    assert told.link == f"/portal/payments/{canceled['boss@reminded.test'].public_id}"
    with app.test_request_context():
        words = messages.render(told.topic, told.params, "en")
    assert words.title == "Scheduled payment canceled: \u2066$100.00\u2069"
    [quietly] = rows(db, shop.quiet, failed_topic)  # the mail off: in the portal only
    assert (quietly.in_portal, quietly.by_email) == (True, False)
    assert rows(db, shop.clerk, failed_topic) == []  # no longer active: not told


def test_a_payer_deactivated_before_the_mail_goes_is_not_mailed(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db)
    failed = make_payment(
        db, make_invoice(db, shop.west, "60.00"), user=shop.admin, status=PaymentStatus.FAILED
    )
    with tenancy.system(db):
        payment_mail.notify(runtime, db, failed)
        shop.admin.status = UserStatus.DISABLED  # before the outbox hands the mail on
    db.commit()
    run_outbox(app)
    assert smtp.messages == []


def test_a_statement_ready_with_the_email_off_is_in_the_portal_only(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    shop = Shop(db)
    make_invoice(db, shop.west, "100.00", due=3)
    today = app.extensions["portal.clock"].today()
    with tenancy.system(db):
        ready = NotificationTopic.STATEMENT_READY
        notifications.set_preferences(db, shop.quiet, {(ready, EMAIL): False})
    for user in (shop.admin, shop.quiet):
        with app.extensions["portal.db"].sessionmaker() as session:
            tenancy.bind(session, tenancy.scope_for_user(user))
            requester = session.get(PortalUser, user.id)
            assert requester is not None
            statements.request_statement(
                runtime,
                session,
                requester,
                start=today - timedelta(days=30),
                end=today,
                account_ids=[shop.west.id],
                fmt=StatementFormat.CSV,
                locale="en_US",
                now=app.extensions["portal.clock"].now(),
                request=audit.RequestInfo(),
            )
            session.commit()
    run_outbox(app)
    assert to(smtp.messages, "quiet@reminded.test") == []
    [mailed] = [m for m in smtp.messages if m["To"] == "boss@reminded.test"]
    assert mailed["Subject"] == "Your statement is ready"
    assert mailed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/portal/download/" in text_of(mailed)
    for user, by_email in ((shop.admin, True), (shop.quiet, False)):
        [told] = rows(db, user, ready)
        assert (told.in_portal, told.by_email, told.link) == (True, by_email, "/portal/statements")


# real RQ workers, twice at once -------------------------------------------------------------


def test_the_reminders_job_twice_at_once_on_two_workers_mails_once(portal: Portal) -> None:
    def prepare(session: Session) -> None:
        shop = Shop(session)
        make_invoice(session, shop.west, "100.00", due=3, number="W-SOON")
        make_invoice(session, shop.east, "200.00", due=-1, number="E-LATE")

    portal.write(prepare)
    portal.workers.start()
    portal.workers.start()
    portal.until(
        "two workers listening",
        lambda: portal.workers.output().count("Listening on portal") == 2,
        60,
    )
    queue = RQJobQueue(portal.redis.url)
    for copy in ("a", "b"):  # the job twice, at once: each worker takes one
        queue.enqueue(SEND_REMINDERS, job_id=f"reminders-{copy}")
    boss, clerk, quiet = (f"{who}@reminded.test" for who in ("boss", "clerk", "quiet"))
    soon, late = "Invoice W-SOON is due soon", "Invoice E-LATE is overdue"
    new_west, new_east = "New invoice W-SOON", "New invoice E-LATE"
    expected = Counter(
        [
            *[(boss, soon), (boss, late), (boss, new_west), (boss, new_east)],
            *[(clerk, soon), (clerk, new_west)],  # West only
            *[(quiet, late), (quiet, new_west), (quiet, new_east)],  # no due-date mail
        ]
    )

    def mails() -> Counter[tuple[str, str]]:
        return Counter((str(m["To"]), str(m["Subject"])) for m in portal.mailbox.messages)

    portal.until("the reminders mailed", lambda: mails() == expected, 60)
    portal.still("once each", lambda: mails() == expected, 3)
    for message in portal.mailbox.messages:
        assert message["List-Unsubscribe"].startswith("<http://localhost/unsubscribe/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    finished = queue.queue.finished_job_registry.get_job_ids()
    assert {"reminders-a", "reminders-b"} <= set(finished)  # both runs ran to the end
    queue.queue.connection.close()


def test_a_run_costs_the_same_whatever_a_customers_history(
    app: Flask, db: Session, count_queries: QueryCounter
) -> None:
    shop = Shop(db)
    db.commit()
    with app.app_context():
        jobs.send_reminders()
        count_queries.statements.clear()
        jobs.send_reminders()  # nothing to tell
    before = count_queries.count
    clock = app.extensions["portal.clock"]
    for n in range(120):  # paid, open and overdue long ago, due later: none to tell today
        old = make_invoice(
            db,
            shop.east if n % 2 else shop.west,
            "10.00",
            balance=0 if n % 3 == 0 else None,
            due=-(n + 5) if n % 4 else n + 10,
        )
        with tenancy.system(db):
            old.created_at = clock.now() - timedelta(days=200 - n)
    db.commit()
    count_queries.statements.clear()
    loaded: list[Invoice] = []

    def seen(invoice: Invoice, _context: object) -> None:
        loaded.append(invoice)

    event.listen(Invoice, "load", seen)
    try:
        with app.app_context():
            jobs.send_reminders()
    finally:
        event.remove(Invoice, "load", seen)
    assert count_queries.count == before  # per user, not per invoice
    assert loaded == []  # indexed ranges: not one invoice of the history read


def test_a_mark_that_stood_still_is_read_back_a_week_at_most(app: Flask, db: Session) -> None:
    clock = app.extensions["portal.clock"]
    now = clock.now()
    with tenancy.system(db):
        assert reminders.issued_since(db, now) == now - timedelta(days=1, minutes=15)
        db.add(NotificationRun(name=reminders.ISSUED_RUN, done_until=now - timedelta(hours=2)))
        db.flush()
        assert reminders.issued_since(db, now) == now - timedelta(hours=2, minutes=15)
        reminders.issued_done(db, now - timedelta(days=30))  # never moved back
        db.expire_all()
        assert reminders.issued_since(db, now) == now - timedelta(hours=2, minutes=15)
        run = db.get(NotificationRun, reminders.ISSUED_RUN)
        assert run is not None
        run.done_until = now - timedelta(days=40)
        db.flush()
        assert reminders.issued_since(db, now) == now - reminders.ISSUED_AT_MOST


def test_one_users_trouble_holds_up_no_one_and_keeps_the_mark(
    app: Flask, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = Shop(db)
    make_invoice(db, shop.west, "100.00", due=3, number="W-SOON")
    db.commit()
    remind = reminders.remind

    def troubled(runtime: Runtime, session: Session, user_id: int, **kwargs: datetime) -> int:
        if user_id == shop.clerk.id:
            raise RuntimeError("a user's trouble")
        return remind(runtime, session, user_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reminders, "remind", troubled)
    with app.app_context():
        outcome = jobs.send_reminders()
    assert outcome["failed"] == 1 and outcome["notified"] > 0
    assert [n.params["invoice"] for n in rows(db, shop.admin, DUE)] == ["W-SOON"]
    assert rows(db, shop.clerk, DUE, ISSUED) == []
    with tenancy.system(db):
        assert db.get(NotificationRun, reminders.ISSUED_RUN) is None  # read again next run
    monkeypatch.setattr(reminders, "remind", remind)
    with app.app_context():
        assert jobs.send_reminders()["failed"] == 0
    assert [n.params["invoice"] for n in rows(db, shop.clerk, ISSUED)] == ["W-SOON"]
