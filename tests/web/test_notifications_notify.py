"""notify(): once per key, the user's channels honoured, inactive users left alone, one mail."""

from __future__ import annotations

from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import (
    Notification,
    NotificationChannel,
    NotificationTopic,
    PortalUser,
    UserStatus,
    Work,
)
from portal.notifications import SEND_NOTIFICATION, notify
from portal.runtime import Runtime
from portal.services import notifications
from tests.conftest import Inbox, user_by_email

pytestmark = pytest.mark.usefixtures("connection")
DUE = NotificationTopic.PAYMENT_DUE
PARAMS = {"invoice": "INV-1003", "amount": 12345, "currency": "USD", "due_date": "2026-12-04"}


@pytest.fixture
def runtime(app: Flask) -> Iterator[Runtime]:
    with app.app_context():
        yield app.extensions["portal.runtime"]


def _run(app: Flask) -> int:
    return int(app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now()))


def _user(db: Session, email: str = "admin@acme.test") -> PortalUser:
    user = user_by_email(db, email)
    tenancy.bind(db, tenancy.scope_for_user(user))
    return db.merge(user)


def _rows(db: Session, user: PortalUser) -> list[Notification]:
    with tenancy.system(db):
        return list(
            db.scalars(
                select(Notification)
                .where(Notification.user_id == user.id, Notification.topic == DUE)
                .order_by(Notification.id)
            )
        )


def _mails_asked(db: Session) -> int:
    return int(db.scalar(select(func.count(Work.id)).where(Work.job == SEND_NOTIFICATION)) or 0)


def _text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return str(part.get_payload(decode=True).decode())
    raise AssertionError("no text part")


def test_a_key_notifies_once_and_mails_once(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    user = _user(db)
    first = notify(
        runtime,
        db,
        user,
        DUE,
        key="due:INV-1003:2026-12-04",
        params=PARAMS,
        link="/portal/invoices",
    )
    again = notify(runtime, db, user, DUE, key="due:INV-1003:2026-12-04", params=PARAMS)
    assert first is not None and again is None
    assert first.in_portal and first.by_email and first.read_at is None
    db.commit()
    assert [row.id for row in _rows(db, user)] == [first.id]
    assert _mails_asked(db) == 1
    assert _run(app) == 1
    assert _run(app) == 0
    (message,) = smtp.messages
    assert message["To"] == "admin@acme.test"
    assert message["Subject"] == "Invoice INV-1003 is due soon"
    assert message["List-Unsubscribe"].startswith("<http://localhost/unsubscribe/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = _text(message)
    assert "$123.45 is due on Dec 4, 2026." in text
    assert "http://localhost/portal/invoices" in text
    # another key is another notification
    later = notify(runtime, db, user, DUE, key="due:INV-1003:2026-12-11", params=PARAMS)
    assert later is not None and later.id != first.id


def test_the_portal_channel_off_still_records_the_event_once(runtime: Runtime, db: Session) -> None:
    user = _user(db)
    notifications.set_preferences(
        db,
        user,
        {(DUE, NotificationChannel.PORTAL): False, (DUE, NotificationChannel.EMAIL): False},
    )
    first = notify(runtime, db, user, DUE, key="k1", params=PARAMS)
    assert first is not None and not first.in_portal and not first.by_email
    assert notify(runtime, db, user, DUE, key="k1", params=PARAMS) is None
    assert _mails_asked(db) == 0
    assert notifications.unread_count(db, user) == 2  # the seeded two; this one is not shown
    assert first.id not in [n.id for n in notifications.inbox(db, user).items]


def test_email_only_and_portal_only(runtime: Runtime, db: Session) -> None:
    user = _user(db)
    unread = notifications.unread_count(db, user)
    notifications.set_preferences(db, user, {(DUE, NotificationChannel.EMAIL): False})
    shown = notify(runtime, db, user, DUE, key="a", params=PARAMS)
    assert shown is not None and shown.in_portal and not shown.by_email
    assert _mails_asked(db) == 0
    assert notifications.unread_count(db, user) == unread + 1
    notifications.set_preferences(
        db,
        user,
        {(DUE, NotificationChannel.EMAIL): True, (DUE, NotificationChannel.PORTAL): False},
    )
    mailed = notify(runtime, db, user, DUE, key="b", params=PARAMS)
    assert mailed is not None and not mailed.in_portal and mailed.by_email
    assert _mails_asked(db) == 1
    assert notifications.unread_count(db, user) == unread + 1


def test_the_monthly_statement_is_off_until_chosen(runtime: Runtime, db: Session) -> None:
    user = _user(db)
    chosen = notifications.channels(db, user, NotificationTopic.MONTHLY_STATEMENT)
    assert chosen == {"email": False, "portal": False}
    assert notifications.channels(db, user, NotificationTopic.INVOICE_ISSUED)["email"]


def test_turning_the_mail_off_before_it_goes_sends_nothing(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    user = _user(db)
    assert notify(runtime, db, user, DUE, key="late", params=PARAMS) is not None
    notifications.set_preferences(db, user, {(DUE, NotificationChannel.EMAIL): False})
    db.commit()
    assert _run(app) == 1
    assert smtp.messages == []
    with tenancy.system(db):
        outcome = db.scalar(select(Work.outcome).where(Work.job == SEND_NOTIFICATION))
    assert outcome == "opted out"


def test_an_inactive_user_is_not_notified(runtime: Runtime, db: Session) -> None:
    user = _user(db, "ap@acme.test")
    user.status = UserStatus.DISABLED
    db.flush()
    assert notify(runtime, db, user, DUE, key="x", params=PARAMS) is None
    assert _rows(db, user) == []
    assert _mails_asked(db) == 0


def test_the_mail_is_in_the_readers_language(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    user = _user(db, "admin@globex.test")
    params = {"invoice": "RE-2001", "amount": 50000, "currency": "EUR", "due_date": "2026-12-04"}
    assert notify(runtime, db, user, NotificationTopic.PAYMENT_OVERDUE, key="o", params=params)
    db.commit()
    assert _run(app) == 1
    (message,) = smtp.messages
    assert str(make_header(decode_header(message["Subject"]))) == (
        "Rechnung RE-2001 ist überfällig"
    )
    assert "500,00\xa0€" in _text(message)
