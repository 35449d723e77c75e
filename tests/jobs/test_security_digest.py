"""The admins' daily security digest: yesterday's alerts of the company's users, mailed once per
admin and day (however often the recurring job runs), through a real SMTP server; no alerts, no
mail; another company's admins hear nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from email.message import Message

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import security_alerts as alerts
from portal import tenancy
from portal.models import PortalUser, Role, UserStatus
from portal.runtime import SCHEDULES, SEND_SECURITY_DIGESTS, Runtime
from portal.services import audit
from portal.services import security_alerts as domain
from portal.services.security_alerts import Kind
from tests.conftest import Inbox, user_by_email
from workers import jobs

pytestmark = pytest.mark.usefixtures("connection")
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
SUBJECT = "Security alerts of your company's users"


@pytest.fixture
def runtime(app: Flask) -> Iterator[Runtime]:
    with app.app_context():
        yield app.extensions["portal.runtime"]


def _run(app: Flask) -> int:
    return int(app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now()))


def _text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return str(part.get_payload(decode=True).decode())
    raise AssertionError("no text part")


def _digests(inbox: Inbox) -> list[Message]:
    return [m for m in inbox.messages if str(m["Subject"]).startswith(SUBJECT)]


def _admins(db: Session, company_id: int) -> set[str]:
    with tenancy.system(db):
        return set(
            db.scalars(
                select(PortalUser.email).where(
                    PortalUser.company_id == company_id,
                    PortalUser.role == Role.ADMIN,
                    PortalUser.status == UserStatus.ACTIVE,
                )
            )
        )


def test_the_digest_is_recurring() -> None:
    assert SCHEDULES["security_digests"][1] == SEND_SECURITY_DIGESTS


def test_yesterdays_alerts_are_mailed_to_each_admin_once(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    clerk = user_by_email(db, "ap@acme.test")
    request = audit.RequestInfo("198.51.100.7", FIREFOX)
    with tenancy.system(db):
        alerts.alert(runtime, db, clerk, Kind.API_TOKEN_CREATED, request=request)
        alerts.alert(runtime, db, clerk, Kind.PASSWORD_CHANGED, request=request)
    db.commit()
    app.extensions["portal.clock"].advance(timedelta(days=1))
    with app.app_context():
        first = jobs.send_security_digests()
        second = jobs.send_security_digests()
    admins = _admins(db, clerk.company_id)
    assert first == {"companies": 1, "digests": len(admins)}
    assert second == {"companies": 1, "digests": 0}
    _run(app)
    digests = _digests(smtp)
    assert {str(m["To"]) for m in digests} == admins
    assert len(digests) == len(admins)
    text = _text(digests[0])
    assert "ap@acme.test: A new API token was created" in text
    assert "ap@acme.test: Your password was changed" in text
    assert "198.51.100.7 (Firefox / Windows)" in text
    assert digests[0]["List-Unsubscribe"] is None
    # the day after: nothing new, nothing mailed
    app.extensions["portal.clock"].advance(timedelta(days=1))
    with app.app_context():
        assert jobs.send_security_digests() == {"companies": 0, "digests": 0}
    _run(app)
    assert len(_digests(smtp)) == len(admins)


def test_no_alerts_no_digest(app: Flask, db: Session, smtp: Inbox) -> None:
    with app.app_context():
        assert jobs.send_security_digests() == {"companies": 0, "digests": 0}
    _run(app)
    assert _digests(smtp) == []


def test_a_flood_of_alerts_makes_a_bounded_digest_that_says_how_many_more(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    # An attacker bursting failed sign-ins on every address of a company makes many alerts:
    # the admins' mail lists DIGEST_LINES of them and says how many more, never all.
    clerk = user_by_email(db, "ap@acme.test")
    now = app.extensions["portal.clock"].now()
    request = audit.RequestInfo("198.51.100.7", FIREFOX)
    extra = 5
    with tenancy.system(db):
        for n in range(domain.DIGEST_LINES + extra):
            domain.record(db, clerk, Kind.FAILED_ATTEMPTS, request=request, now=now, key=f"f{n}")
    db.commit()
    app.extensions["portal.clock"].advance(timedelta(days=1))
    with app.app_context():
        jobs.send_security_digests()
    _run(app)
    digest = _digests(smtp)[0]
    assert digest["Subject"] == f"{SUBJECT}: {domain.DIGEST_LINES + extra}"
    text = _text(digest)
    assert text.count("ap@acme.test: ") == domain.DIGEST_LINES
    assert f"{extra} more are not listed here" in text
    html = next(p for p in digest.walk() if p.get_content_type() == "text/html")
    assert f"{extra} more are not listed here" in str(html.get_payload(decode=True).decode())
