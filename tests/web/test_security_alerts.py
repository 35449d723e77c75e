"""Security alerts: each trigger mails the user on a real SMTP server (a known device does not),
bursts of failures alert once at the threshold, the rate limit holds mails back, and "This
wasn't me" ends every session and token of the account."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import timedelta
from email.message import Message
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from portal import security_alerts as alerts
from portal import tenancy
from portal.extensions import password_hasher
from portal.models import (
    AuditEvent,
    Notification,
    NotificationChannel,
    NotificationTopic,
    PortalUser,
    SecurityAlert,
    SignInOrigin,
    Work,
)
from portal.runtime import Runtime
from portal.services import audit, credentials, mfa, notifications, seed
from portal.services import security_alerts as domain
from tests.api.conftest import issue_token
from tests.conftest import Auth, Inbox, csrf_token, totp_code, user_by_email
from tests.web.test_payment_methods import add_card
from tests.web.test_profile import _sign

pytestmark = pytest.mark.usefixtures("connection")

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
TOPIC = NotificationTopic.SECURITY_ALERT
NOT_ME = re.compile(r"http://localhost(/security/not-me/\S+)")


@pytest.fixture
def runtime(app: Flask) -> Iterator[Runtime]:
    with app.app_context():
        yield app.extensions["portal.runtime"]


def _run(app: Flask) -> int:
    return int(app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now()))


def _advance(app: Flask, delta: timedelta) -> None:
    app.extensions["portal.clock"].advance(delta)


def _client(app: Flask, agent: str = "", ip: str = "") -> FlaskClient:
    client = app.test_client()
    if agent:
        client.environ_base["HTTP_USER_AGENT"] = agent
    if ip:
        client.environ_base["REMOTE_ADDR"] = ip
    return client


def _sign_in(app: Flask, email: str = "admin@acme.test", **kw: str) -> FlaskClient:
    client = _client(app, **kw)
    Auth(app, client).sign_in(email)
    return client


def _text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return str(part.get_payload(decode=True).decode())
    raise AssertionError("no text part")


def _html(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            return str(part.get_payload(decode=True).decode())
    raise AssertionError("no html part")


def _alerts(db: Session, email: str = "admin@acme.test") -> list[SecurityAlert]:
    db.expire_all()
    with tenancy.system(db):
        user = user_by_email(db, email)
        return list(
            db.scalars(
                select(SecurityAlert)
                .where(SecurityAlert.user_id == user.id)
                .order_by(SecurityAlert.id)
            )
        )


def _alert_mails(inbox: Inbox) -> list[Message]:
    return [m for m in inbox.messages if NOT_ME.search(_text(m))]


def _user(db: Session, email: str = "admin@acme.test") -> PortalUser:
    user = user_by_email(db, email)
    tenancy.bind(db, tenancy.scope_for_user(user))
    return db.merge(user)


# sign-ins from somewhere new -------------------------------------------------------------


def test_a_first_sign_in_records_without_alerting_and_a_known_device_stays_quiet(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    _sign_in(app, agent=FIREFOX)
    _sign_in(app, agent=FIREFOX)  # the same device and network
    _sign_in(app, agent=FIREFOX, ip="127.0.0.200")  # the same /24
    _run(app)
    assert _alerts(db) == []
    assert _alert_mails(smtp) == []


def test_a_new_device_is_alerted_by_mail_and_in_the_centre(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    _sign_in(app, agent=FIREFOX)
    client = _sign_in(app, agent=SAFARI)
    (alert,) = _alerts(db)
    assert (alert.kind, alert.ip_address, alert.device, alert.mailed) == (
        "new_sign_in",
        "127.0.0.1",
        "Safari / iPhone",
        True,
    )
    assert _run(app) >= 1
    (mail,) = _alert_mails(smtp)
    assert mail["To"] == "admin@acme.test"
    assert mail["Subject"] == "New sign-in to your account"
    assert mail["List-Unsubscribe"] is None  # always on: nothing to unsubscribe from
    text = _text(mail)
    assert "127.0.0.1" in text and "Safari / iPhone" in text
    assert "cannot be turned off" in text
    assert "http://localhost/portal/security" in text
    assert "This wasn&#39;t me" in _html(mail) or "This wasn't me" in _html(mail)
    # in the portal too, and in the activity log in words
    centre = client.get("/portal/notifications/inbox").get_data(as_text=True)
    assert "New sign-in to your account" in centre
    with tenancy.system(db):
        (event,) = db.scalars(
            select(AuditEvent).where(AuditEvent.name == "Portal.SecurityAlert")
        ).all()
    assert event.properties["kind"] == "new_sign_in"
    log = client.get("/portal/activity?kind=security").get_data(as_text=True)
    assert "Security alert sent" in log and "Alert: New sign-in to your account" in log


def test_a_new_network_is_alerted_and_an_old_one_counts_as_new_after_90_days(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    _sign_in(app, agent=FIREFOX)
    _sign_in(app, agent=FIREFOX, ip="203.0.113.9")
    assert [a.kind for a in _alerts(db)] == ["new_sign_in"]
    _advance(app, timedelta(days=60))
    _sign_in(app, agent=FIREFOX, ip="203.0.113.77")  # seen 60 days ago: known
    assert len(_alerts(db)) == 1
    _advance(app, timedelta(days=91))
    _sign_in(app, agent=FIREFOX)  # 127.0.0.0/24 last seen 151 days ago
    assert len(_alerts(db)) == 2
    _run(app)
    assert len(_alert_mails(smtp)) == 2


def test_sessions_from_before_alerts_existed_are_history(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    # Signed in before sign-ins were recorded (only the sessions know it): the first sign-in
    # since, from somewhere else, is alerted, not passed as a quiet first one...
    _sign_in(app, agent=FIREFOX)
    with tenancy.system(db):
        db.execute(delete(SignInOrigin))
        db.commit()
    _advance(app, timedelta(hours=1))
    _sign_in(app, agent=SAFARI, ip="198.51.100.7")
    (alert,) = _alerts(db)
    assert (alert.kind, alert.ip_address, alert.device) == (
        "new_sign_in",
        "198.51.100.7",
        "Safari / iPhone",
    )
    # ...and one from where the sessions were is known.
    with tenancy.system(db):
        db.execute(delete(SignInOrigin))
        db.commit()
    _advance(app, timedelta(hours=1))
    _sign_in(app, agent=FIREFOX)
    assert len(_alerts(db)) == 1


def test_network_keys() -> None:
    assert domain.network_of("203.0.113.9") == "203.0.113.0/24"
    assert domain.network_of("::ffff:203.0.113.9") == "203.0.113.0/24"
    assert domain.network_of("2001:db8:abcd:12::1") == "2001:db8:abcd::/48"
    assert domain.network_of("not an address") == ""
    assert domain.device_of(FIREFOX) == "Firefox / Windows"
    assert domain.device_of("") == ""


# bursts of failures ----------------------------------------------------------------------


def _fail_password(app: Flask, client: FlaskClient, email: str) -> None:
    response = Auth(app, client).login(email, password="not the password")
    assert response.status_code == 401


def test_a_burst_is_told_at_the_time_it_happened_however_late_the_job_runs(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    client = _client(app)
    for _ in range(3):
        _fail_password(app, client, "admin@acme.test")
    happened = app.extensions["portal.clock"].now()
    _advance(app, timedelta(hours=3))  # the queue was slow
    _run(app)
    (alert,) = _alerts(db)
    assert abs(alert.created_at - happened) < timedelta(minutes=1)
    with tenancy.system(db):
        (row,) = db.scalars(select(Notification).where(Notification.topic == TOPIC)).all()
    assert row.params["at"] == alert.created_at.isoformat()


def test_the_third_failed_password_alerts_once_before_the_lockout(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    client = _client(app)
    for _ in range(2):
        _fail_password(app, client, "admin@acme.test")
    _run(app)
    assert _alerts(db) == []
    _fail_password(app, client, "admin@acme.test")
    _run(app)
    (alert,) = _alerts(db)
    assert alert.kind == "failed_attempts"
    _fail_password(app, client, "admin@acme.test")  # the fourth: no second alert in the window
    _run(app)
    assert len(_alerts(db)) == 1
    (mail,) = _alert_mails(smtp)
    assert mail["Subject"] == "Several failed sign-in attempts on your account"


def test_a_lockout_below_the_burst_threshold_still_alerts(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    # An operator's LOCKOUT_THRESHOLD=2 locks before a third failure could ever be counted:
    # the burst is then the lockout itself, not never.
    configured = app.config["SETTINGS"]
    app.config["SETTINGS"] = dataclasses.replace(configured, lockout_threshold=2)
    try:
        client = _client(app)
        _fail_password(app, client, "admin@acme.test")
        _run(app)
        assert _alerts(db) == []
        _fail_password(app, client, "admin@acme.test")
        _run(app)
    finally:
        app.config["SETTINGS"] = configured
    (alert,) = _alerts(db)
    assert alert.kind == "failed_attempts"
    (mail,) = _alert_mails(smtp)
    assert mail["Subject"] == "Several failed sign-in attempts on your account"


def test_an_unknown_address_takes_the_same_path_and_nobody_is_mailed(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    client = _client(app)
    for _ in range(3):
        _fail_password(app, client, "nobody@acme.test")
    with tenancy.system(db):
        jobs = db.scalars(select(Work.job).where(Work.job == alerts.BURST_ALERT)).all()
    assert len(jobs) == 1  # handed off exactly as for an account
    _run(app)
    with tenancy.system(db):
        outcome = db.scalar(select(Work.outcome).where(Work.job == alerts.BURST_ALERT))
    assert outcome == "no account"
    assert smtp.messages == []


def test_failed_codes_count_toward_the_burst(app: Flask, db: Session, smtp: Inbox) -> None:
    _sign_in(app)  # history, so later sign-ins from here are known
    client = _client(app)
    auth = Auth(app, client)
    _advance(app, timedelta(seconds=30))
    assert auth.login().status_code == 302
    for _ in range(3):
        assert auth.code("000000").status_code == 401
    _run(app)
    assert [a.kind for a in _alerts(db)] == ["failed_attempts"]


def _api_login(app: Flask, client: FlaskClient, **over: str) -> Any:
    _advance(app, timedelta(seconds=30))  # never a replayed code
    body = {"email": "admin@acme.test", "password": seed.DEMO_PASSWORD, "code": totp_code(app)}
    return client.post("/api/portal/login", json={**body, **over})


def test_the_apis_sign_in_alerts_a_new_network_and_a_burst(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    _sign_in(app, agent=FIREFOX)
    known = _client(app, agent=FIREFOX)
    assert _api_login(app, known).status_code == 200
    assert _alerts(db) == []
    elsewhere = _client(app, agent=FIREFOX, ip="198.51.100.20")
    assert _api_login(app, elsewhere).status_code == 200
    assert [a.kind for a in _alerts(db)] == ["new_sign_in"]
    for _ in range(3):
        assert _api_login(app, elsewhere, password="wrong").status_code == 401
    _run(app)
    assert [a.kind for a in _alerts(db)] == ["new_sign_in", "failed_attempts"]
    assert len(_alert_mails(smtp)) == 2


# the rate limit --------------------------------------------------------------------------


def test_alert_mails_are_rate_limited_but_every_alert_is_recorded(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    user = _user(db)
    request = audit.RequestInfo("198.51.100.7", FIREFOX)
    for _ in range(5):
        alerts.alert(runtime, db, user, domain.Kind.API_TOKEN_CREATED, request=request)
    db.commit()
    _run(app)
    assert len(_alert_mails(smtp)) == domain.MAILS_PER_HOUR
    rows = _alerts(db)
    assert [a.mailed for a in rows] == [True, True, True, False, False]
    with tenancy.system(db):
        shown = db.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.topic == TOPIC, Notification.in_portal.is_(True))
        )
        audited = db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.name == "Portal.SecurityAlert")
        )
    assert shown == 5 and audited == 5
    # an hour on, mail again, up to the day's limit
    for _hour in range(4):
        _advance(app, timedelta(minutes=61))
        for _ in range(3):
            alerts.alert(runtime, db, user, domain.Kind.API_TOKEN_CREATED, request=request)
        db.commit()
    _run(app)
    assert len(_alert_mails(smtp)) == domain.MAILS_PER_DAY


def test_a_key_alerts_once(runtime: Runtime, db: Session) -> None:
    user = _user(db)
    request = audit.RequestInfo("198.51.100.7", FIREFOX)
    kind = domain.Kind.PAYMENT_METHOD_ADDED
    assert alerts.alert(runtime, db, user, kind, request=request, key="pm_1") is not None
    assert alerts.alert(runtime, db, user, kind, request=request, key="pm_1") is None


# security alerts are always on -----------------------------------------------------------


def test_preferences_cannot_turn_security_alerts_off(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    user = _user(db)
    choice = {(TOPIC, c): False for c in NotificationChannel}
    assert notifications.set_preferences(db, user, choice) == []
    assert notifications.channels(db, user, TOPIC) == {"email": True, "portal": True}
    assert all(notifications.preferences(db, user)[(TOPIC, c)] for c in NotificationChannel)
    page = client.get("/portal/notifications").get_data(as_text=True)
    assert "Always on" in page
    assert 'name="security_alert' not in page
    keys = app.config["SETTINGS"].keyring
    token = notifications.unsubscribe_token(
        user, TOPIC, keys=keys, now=app.extensions["portal.clock"].now()
    )
    refused = client.post(f"/unsubscribe/{token}")
    assert refused.status_code == 409
    assert "cannot be turned off" in refused.get_data(as_text=True)


# each trigger ----------------------------------------------------------------------------


def _kinds_mailed(app: Flask, smtp: Inbox) -> list[str]:
    _run(app)
    return [str(m["Subject"]) for m in _alert_mails(smtp)]


def test_new_recovery_codes_alert(app: Flask, db: Session, smtp: Inbox) -> None:
    # Fresh recovery codes pass the second factor without the authenticator: whoever holds a
    # session and the password could mint their own way back in, so the owner hears of it.
    client = _sign_in(app)
    token = csrf_token(client, "/portal/security")
    issued = client.post(
        "/portal/security/recovery-codes",
        data={"rc-csrf_token": token, "rc-current_password": seed.DEMO_PASSWORD},
    )
    assert issued.status_code == 200
    assert _kinds_mailed(app, smtp) == ["New recovery codes were issued for your account"]
    # "This wasn't me" on it: the codes the intruder saw pass nothing any more.
    found = NOT_ME.search(_text(_alert_mails(smtp)[0]))
    assert found
    owner = _client(app)
    page = owner.get(found.group(1)).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert csrf
    assert owner.post(found.group(1), data={"csrf_token": csrf.group(1)}).status_code == 200
    with tenancy.system(db):
        assert mfa.remaining_recovery_codes(db, user_by_email(db, "admin@acme.test")) == 0


def test_a_password_change_alerts(app: Flask, db: Session, smtp: Inbox) -> None:
    client = _sign_in(app)
    token = csrf_token(client, "/portal/security")
    new = "a brand new passphrase 42"
    changed = client.post(
        "/portal/security/password",
        data={
            "pw-csrf_token": token,
            "pw-current_password": seed.DEMO_PASSWORD,
            "pw-new_password": new,
            "pw-confirm_password": new,
        },
    )
    assert changed.status_code == 302, changed.get_data(as_text=True)
    assert _kinds_mailed(app, smtp) == ["Your password was changed"]


def test_a_password_reset_by_link_alerts(app: Flask, db: Session, smtp: Inbox) -> None:
    keys = app.config["SETTINGS"].keyring
    now = app.extensions["portal.clock"].now()
    token = credentials.reset_token(user_by_email(db, "ap@acme.test"), keys=keys, now=now)
    client = _client(app)
    link = f"/password/reset/{token}"
    new = "correct horse battery staple"
    data = {"csrf_token": csrf_token(client, link), "new_password": new, "confirm_password": new}
    assert client.post(link, data=data).status_code == 302
    _run(app)
    mails = _alert_mails(smtp)
    assert [(m["To"], m["Subject"]) for m in mails] == [
        ("ap@acme.test", "Your password was changed")
    ]


def test_a_new_api_token_alerts(app: Flask, db: Session, smtp: Inbox) -> None:
    client = _sign_in(app)
    token = csrf_token(client, "/portal/security")
    made = client.post(
        "/portal/security/tokens",
        data={
            "tk-csrf_token": token,
            "tk-name": "books",
            "tk-scope": "read",
            "tk-expires_in": "30",
        },
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    assert _kinds_mailed(app, smtp) == ["A new API token was created"]


def test_an_mfa_reset_by_an_administrator_alerts_the_user(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    client = _sign_in(app)
    target = user_by_email(db, "ap@acme.test")
    token = csrf_token(client, f"/portal/users/{target.public_id}")
    done = client.post(
        f"/portal/users/{target.public_id}/reset-mfa",
        data={"csrf_token": token, "confirm": "y"},
    )
    assert done.status_code in {302, 303}, done.get_data(as_text=True)
    _run(app)
    mails = _alert_mails(smtp)
    assert [(m["To"], m["Subject"]) for m in mails] == [
        ("ap@acme.test", "Your two-step verification was reset")
    ]


def test_a_payment_method_added_alerts_once(app: Flask, db: Session, smtp: Inbox) -> None:
    client = _sign_in(app)
    add_card(client, "4242 4242 4242 4242")
    assert _kinds_mailed(app, smtp) == ["A payment method was added"]


def test_a_confirmed_email_change_alerts_the_address_it_moved_away_from(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    # Whoever took the account over chose the new address: the alert, and its "This wasn't
    # me", go to the address the account had, where its owner still reads.
    client = _sign_in(app)
    link = _sign(app, _user(db), "moved@acme.test")
    assert client.get(f"/portal/profile/email/{link}").status_code == 303
    _run(app)
    mails = _alert_mails(smtp)
    assert [(m["To"], m["Subject"]) for m in mails] == [
        ("admin@acme.test", "Your e-mail address was changed")
    ]


def test_this_wasnt_me_on_an_email_change_gives_the_address_back_and_mails_the_reset_there(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    taker = _sign_in(app)
    link = _sign(app, _user(db), "taker@evil.test")
    assert taker.get(f"/portal/profile/email/{link}").status_code == 303
    _run(app)
    (mail,) = _alert_mails(smtp)
    found = NOT_ME.search(_text(mail))
    assert found and mail["To"] == "admin@acme.test"
    owner = _client(app)
    page = owner.get(found.group(1)).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token
    before = len(smtp.messages)
    done = owner.post(found.group(1), data={"csrf_token": token.group(1)})
    answer = done.get_data(as_text=True)
    assert done.status_code == 200 and "Your account is secured" in answer
    assert "a•••@acme.test" in answer and "evil.test" not in answer  # the address given back
    assert taker.get("/portal/dashboard").status_code == 302
    db.expire_all()
    with tenancy.system(db):
        user = db.scalars(select(PortalUser).where(PortalUser.public_id == _user(db).public_id))
        assert user.one().email == "admin@acme.test"
        changed = db.scalars(
            select(AuditEvent).where(AuditEvent.name == "Portal.EmailChanged")
        ).all()
    assert len(changed) == 2  # the change, and its undoing
    _run(app)
    resets = [m for m in smtp.messages[before:] if "Reset your" in str(m["Subject"])]
    assert [m["To"] for m in resets] == ["admin@acme.test"]


def test_any_alerts_link_gives_back_the_address_it_was_mailed_to(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    # The intruder signs in (alerted to the owner's address), then moves the account to their
    # own. The owner presses the sign-in alert's link: the reset must not go to the intruder.
    link = _not_me_link(app, db, smtp)  # the Safari sign-in's alert, to admin@acme.test
    intruder = _sign_in(app, agent=SAFARI)
    moved = _sign(app, _user(db), "taker@evil.test")
    assert intruder.get(f"/portal/profile/email/{moved}").status_code == 303
    _run(app)
    owner = _client(app)
    page = owner.get(link).get_data(as_text=True)
    assert "a•••@acme.test" in page and "evil.test" not in page  # the mailbox it came to
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token
    before = len(smtp.messages)
    assert owner.post(link, data={"csrf_token": token.group(1)}).status_code == 200
    assert intruder.get("/portal/dashboard").status_code == 302
    _run(app)
    resets = [m for m in smtp.messages[before:] if "Reset your" in str(m["Subject"])]
    assert [m["To"] for m in resets] == ["admin@acme.test"]
    db.expire_all()
    with tenancy.system(db):
        assert user_by_email(db, "admin@acme.test") is not None


def test_an_alert_goes_to_the_address_the_account_had_when_it_happened(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    # The intruder's sign-in, then their e-mail change, before the queue mails anything: the
    # sign-in's alert still goes to the owner's address, not to the one the intruder chose.
    _sign_in(app, agent=FIREFOX)
    intruder = _sign_in(app, agent=SAFARI)
    moved = _sign(app, _user(db), "taker@evil.test")
    assert intruder.get(f"/portal/profile/email/{moved}").status_code == 303
    _run(app)
    assert sorted((m["To"], m["Subject"]) for m in _alert_mails(smtp)) == [
        ("admin@acme.test", "New sign-in to your account"),
        ("admin@acme.test", "Your e-mail address was changed"),
    ]


def test_the_email_changes_link_within_minutes_of_another_still_gives_the_address_back(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    # Another alert's link, mailed to the intruder's address, pressed first: its reset went
    # there. The e-mail change's link, minutes later, brings the address back and mails a
    # reset to the owner after all (the first one is spent: it names the other address).
    user = _user(db)
    request = audit.RequestInfo("198.51.100.7", SAFARI)
    token_made = alerts.alert(runtime, db, user, domain.Kind.API_TOKEN_CREATED, request=request)
    changed = alerts.alert(runtime, db, user, domain.Kind.EMAIL_CHANGED, request=request)
    assert token_made is not None and changed is not None
    with tenancy.system(db):
        user.email = "taker@evil.test"
    keys = app.config["SETTINGS"].keyring
    now = app.extensions["portal.clock"].now()
    first = domain.not_me_token(user, token_made, keys=keys, now=now, address="taker@evil.test")
    second = domain.not_me_token(user, changed, keys=keys, now=now, address="admin@acme.test")
    db.commit()
    owner = _client(app)
    for link in (f"/security/not-me/{first}", f"/security/not-me/{second}"):
        page = owner.get(link).get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
        assert token
        assert owner.post(link, data={"csrf_token": token.group(1)}).status_code == 200
        _run(app)
    resets = [m for m in smtp.messages if "Reset your" in str(m["Subject"])]
    assert [m["To"] for m in resets] == ["taker@evil.test", "admin@acme.test"]
    spent, fresh = (re.search(r"http://localhost(/password/reset/\S+)", _text(m)) for m in resets)
    assert spent and fresh
    assert _client(app).get(spent.group(1)).status_code == 400  # names the address left behind
    assert _client(app).get(fresh.group(1)).status_code == 200


def test_this_wasnt_me_leaves_an_address_another_account_took_since(
    app: Flask, runtime: Runtime, db: Session, smtp: Inbox
) -> None:
    user = _user(db)
    request = audit.RequestInfo("198.51.100.7", FIREFOX)
    event = alerts.alert(runtime, db, user, domain.Kind.EMAIL_CHANGED, request=request)
    assert event is not None
    keys = app.config["SETTINGS"].keyring
    now = app.extensions["portal.clock"].now()
    # A link naming an address that another account holds: nothing is taken from it.
    token = domain.not_me_token(user, event, keys=keys, now=now, address="ap@acme.test")
    db.commit()
    owner = _client(app)
    page = owner.get(f"/security/not-me/{token}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert csrf
    done = owner.post(f"/security/not-me/{token}", data={"csrf_token": csrf.group(1)})
    assert done.status_code == 200 and "Your account is secured" in done.get_data(as_text=True)
    db.expire_all()
    with tenancy.system(db):
        assert user_by_email(db, "admin@acme.test") is not None
        assert user_by_email(db, "ap@acme.test").public_id != user.public_id


# "This wasn't me" ------------------------------------------------------------------------


def _not_me_link(app: Flask, db: Session, smtp: Inbox) -> str:
    _sign_in(app, agent=FIREFOX)
    _sign_in(app, agent=SAFARI)  # the alert
    _run(app)
    (mail,) = _alert_mails(smtp)
    found = NOT_ME.search(_text(mail))
    assert found
    return found.group(1)


def _api_token(app: Flask, db: Session) -> str:
    return issue_token(app, db)


def test_this_wasnt_me_ends_every_session_and_token_and_mails_a_reset_link(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    link = _not_me_link(app, db, smtp)
    one, two = _sign_in(app, agent=FIREFOX), _sign_in(app, agent=SAFARI)
    raw = _api_token(app, db)
    bearer = {"Authorization": f"Bearer {raw}"}
    assert one.get("/api/portal/profile", headers=bearer).status_code == 200
    stranger = _client(app)  # no sign-in needed
    asked = stranger.get(link)
    page = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "Secure your account" in page
    before = len(smtp.messages)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token
    done = stranger.post(link, data={"csrf_token": token.group(1)})
    assert done.status_code == 200 and "Your account is secured" in done.get_data(as_text=True)
    assert one.get("/portal/dashboard").status_code == 302
    assert two.get("/portal/dashboard").status_code == 302
    assert stranger.get("/api/portal/profile", headers=bearer).status_code == 401
    refused = Auth(app, _client(app)).login()
    assert refused.status_code == 401  # the password no longer works
    _run(app)
    resets = [m for m in smtp.messages[before:] if "Reset your" in str(m["Subject"])]
    assert len(resets) == 1
    with tenancy.system(db):
        secured = db.scalars(
            select(AuditEvent).where(AuditEvent.name == "Portal.AccountSecured")
        ).all()
    assert len(secured) == 1
    # a second press: the same answer, no second mail
    again = stranger.post(link, data={"csrf_token": token.group(1)})
    assert again.status_code == 200 and "Your account is secured" in again.get_data(as_text=True)
    _run(app)
    assert len([m for m in smtp.messages[before:] if "Reset your" in str(m["Subject"])]) == 1


def test_a_used_link_cannot_lock_the_account_again_later(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    # Pressed once, the account secured and a new password chosen: the same link, pressed
    # again days later (a forwarded mail, a shared mailbox), ends nothing and locks nobody out.
    link = _not_me_link(app, db, smtp)
    stranger = _client(app)
    page = stranger.get(link).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token
    assert stranger.post(link, data={"csrf_token": token.group(1)}).status_code == 200
    with app.app_context():
        chosen = password_hasher().hash(seed.DEMO_PASSWORD)  # as a reset by link sets it
    with tenancy.system(db):
        user_by_email(db, "admin@acme.test").password_hash = chosen
        db.commit()
    _advance(app, timedelta(days=2))
    mine = _sign_in(app, agent=FIREFOX)
    _run(app)  # the first press's reset mail
    before = len(smtp.messages)
    again = stranger.post(link, data={"csrf_token": token.group(1)})
    assert again.status_code == 200
    assert mine.get("/portal/dashboard").status_code == 200  # still signed in
    assert Auth(app, _client(app, agent=FIREFOX)).login().status_code == 302  # password works
    _run(app)
    assert not [m for m in smtp.messages[before:] if "Reset your" in str(m["Subject"])]
    with tenancy.system(db):
        secured = db.scalars(
            select(AuditEvent).where(AuditEvent.name == "Portal.AccountSecured")
        ).all()
    assert len(secured) == 1


def test_after_this_wasnt_me_the_intruders_device_and_network_are_new_again(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    # The intruder's sign-in taught the portal their device and network. Once the owner says
    # "This wasn't me", neither is trusted: the intruder's next sign-in (a new password phished
    # too) alerts again, where before it passed as known.
    link = _not_me_link(app, db, smtp)  # the owner on Firefox, the intruder on Safari
    owner = _client(app)
    page = owner.get(link).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token
    assert owner.post(link, data={"csrf_token": token.group(1)}).status_code == 200
    with app.app_context():
        chosen = password_hasher().hash(seed.DEMO_PASSWORD)
    with tenancy.system(db):
        user_by_email(db, "admin@acme.test").password_hash = chosen
        db.commit()
    _advance(app, timedelta(hours=2))  # past the hour's mail limit
    _sign_in(app, agent=SAFARI)
    kinds = [a.kind for a in _alerts(db)]
    assert kinds == ["new_sign_in", "new_sign_in"]
    _sign_in(app, agent=SAFARI)  # learnt again from here on
    assert len(_alerts(db)) == 2


def test_after_this_wasnt_me_the_intruders_old_session_vouches_for_nothing(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    # No sign-in recorded yet (the intruder's came before alerts existed): once secured, the
    # intruder's session cannot stand in as history for their next sign-in.
    link = _not_me_link(app, db, smtp)
    with tenancy.system(db):
        db.execute(delete(SignInOrigin))
        db.commit()
    owner = _client(app)
    page = owner.get(link).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token
    assert owner.post(link, data={"csrf_token": token.group(1)}).status_code == 200
    with app.app_context():
        chosen = password_hasher().hash(seed.DEMO_PASSWORD)
    with tenancy.system(db):
        user_by_email(db, "admin@acme.test").password_hash = chosen
        db.commit()
    _advance(app, timedelta(hours=2))
    _sign_in(app, agent=SAFARI)
    assert [a.kind for a in _alerts(db)] == ["new_sign_in", "new_sign_in"]


def test_this_wasnt_me_needs_the_form_token(app: Flask, db: Session, smtp: Inbox) -> None:
    link = _not_me_link(app, db, smtp)
    refused = _client(app).post(link, data={})
    assert refused.status_code == 400
    assert _client(app).get("/portal/dashboard").status_code == 302


def test_a_tampered_or_expired_link_says_which(app: Flask, db: Session, smtp: Inbox) -> None:
    link = _not_me_link(app, db, smtp)
    tampered = _client(app).get(link[:-3] + "xyz")
    assert tampered.status_code == 404
    assert "This link is not valid" in tampered.get_data(as_text=True)
    assert _client(app).get("/security/not-me/").status_code == 404
    _advance(app, domain.LINK_LIFETIME + timedelta(minutes=1))
    expired = _client(app).get(link)
    assert expired.status_code == 410
    assert "This link has expired" in expired.get_data(as_text=True)


def test_a_link_for_another_users_alert_is_not_valid(
    app: Flask, runtime: Runtime, db: Session
) -> None:
    mine = _user(db)
    theirs = user_by_email(db, "ap@acme.test")
    request = audit.RequestInfo("198.51.100.7", FIREFOX)
    event = alerts.alert(runtime, db, mine, domain.Kind.MFA_RESET, request=request)
    assert event is not None
    keys = app.config["SETTINGS"].keyring
    now = app.extensions["portal.clock"].now()
    forged = domain.not_me_token(theirs, event, keys=keys, now=now)
    db.commit()
    assert _client(app).get(f"/security/not-me/{forged}").status_code == 404


def test_the_alert_is_in_the_users_language(app: Flask, db: Session, smtp: Inbox) -> None:
    _sign_in(app, "admin@globex.test", agent=FIREFOX)
    _sign_in(app, "admin@globex.test", agent=SAFARI)
    _run(app)
    (mail,) = _alert_mails(smtp)
    assert mail["To"] == "admin@globex.test"
    assert mail["Subject"] != "New sign-in to your account"
