"""Changing a password, and resetting it by e-mail through a real SMTP server."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from email.header import decode_header, make_header
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import AuditEvent, Work
from tests.conftest import Auth, Inbox, QueryCounter, csrf_token

NEW_PASSWORD = "correct horse battery staple"


def _change(client: FlaskClient, current: str, new: str, confirm: str | None = None) -> Any:
    token = csrf_token(client, "/portal/security")
    return client.post(
        "/portal/security/password",
        data={
            "pw-csrf_token": token,
            "pw-current_password": current,
            "pw-new_password": new,
            "pw-confirm_password": new if confirm is None else confirm,
        },
    )


@pytest.mark.parametrize(
    ("current", "new", "confirm", "message"),
    [
        ("wrong-password-here", NEW_PASSWORD, None, "Your current password is incorrect."),
        ("portal-demo-2026", "short-pw", None, "Use at least 12 characters."),
        ("portal-demo-2026", "password1234", None, "too easy to guess"),
        ("portal-demo-2026", "admin-admin-admin", None, "too easy to guess"),
        ("portal-demo-2026", "qwertyuiopasdf", None, "too easy to guess"),
        ("portal-demo-2026", NEW_PASSWORD, "something else entirely", "don&#39;t match"),
        ("portal-demo-2026", "portal-demo-2026", None, "too easy to guess"),
    ],
)
def test_refused_password_changes_say_why(
    client: FlaskClient, auth: Auth, current: str, new: str, confirm: str | None, message: str
) -> None:
    auth.sign_in()
    response = _change(client, current, new, confirm)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)


def test_password_change_ends_other_sessions(
    app: Flask, client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in()
    other = app.test_client()
    Auth(app, other).sign_in()
    response = _change(client, "portal-demo-2026", NEW_PASSWORD)
    assert response.headers["Location"] == "/portal/security"
    assert other.get("/portal/dashboard").status_code == 302
    assert client.get("/portal/dashboard").status_code == 200
    fresh = Auth(app, app.test_client())
    assert fresh.login(password="portal-demo-2026").status_code == 401
    assert fresh.login(password=NEW_PASSWORD).status_code == 302
    with tenancy.system(db):
        changed = select(AuditEvent).where(AuditEvent.name == "Portal.PasswordChanged")
        assert db.scalars(changed).all()


def test_new_recovery_codes_need_the_password(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in()
    token = csrf_token(client, "/portal/security")
    wrong = client.post(
        "/portal/security/recovery-codes",
        data={"rc-csrf_token": token, "rc-current_password": "nope-nope-nope"},
    )
    assert wrong.status_code == 422
    right = client.post(
        "/portal/security/recovery-codes",
        data={"rc-csrf_token": token, "rc-current_password": "portal-demo-2026"},
    )
    page = right.get_data(as_text=True)
    codes = re.findall(r"<li><code>([0-9a-f]{5}-[0-9a-f]{5})</code></li>", page)
    assert len(codes) == 10
    assert "10 recovery codes left." in client.get("/portal/security").get_data(as_text=True)


def _forgot(client: FlaskClient, email: str) -> Any:
    """Ask for a reset link; the mail goes out from the job queue, run here."""
    token = csrf_token(client, "/password/forgot")
    response = client.post("/password/forgot", data={"csrf_token": token, "email": email})
    app = client.application
    app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now())
    return response


def _reset_link(inbox: Inbox) -> str:
    [message] = inbox.messages
    body = message.get_payload(decode=True).decode()
    match = re.search(r"http://localhost(/password/reset/\S+)", body)
    assert match, body
    return match.group(1)


def test_reset_by_email_end_to_end(
    app: Flask, client: FlaskClient, auth: Auth, smtp: Inbox
) -> None:
    other = app.test_client()
    Auth(app, other).sign_in("ap@acme.test")
    response = _forgot(client, "ap@acme.test")
    assert response.headers["Location"] == "/login"
    assert "we&#39;ve sent it a link" in client.get("/login").get_data(as_text=True)
    [message] = smtp.messages
    assert message["To"] == "ap@acme.test"
    link = _reset_link(smtp)
    page = client.get(link)
    assert page.status_code == 200 and "Choose a new password" in page.get_data(as_text=True)
    token = csrf_token(client, link)
    weak = client.post(
        link,
        data={
            "csrf_token": token,
            "new_password": "password1234",
            "confirm_password": "password1234",
        },
    )
    assert weak.status_code == 422 and "too easy to guess" in weak.get_data(as_text=True)
    done = client.post(
        link,
        data={"csrf_token": token, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
    )
    assert done.headers["Location"] == "/login"
    assert other.get("/portal/dashboard").status_code == 302  # every session ended
    assert auth.login("ap@acme.test", NEW_PASSWORD).headers["Location"] == "/login/mfa"
    again = client.get(link)
    assert again.status_code == 400 and "may have been used already" in again.get_data(as_text=True)


def test_the_mail_leaves_from_the_job_queue_not_the_request(
    app: Flask, client: FlaskClient, smtp: Inbox
) -> None:
    token = csrf_token(client, "/password/forgot")
    client.post("/password/forgot", data={"csrf_token": token, "email": "admin@acme.test"})
    assert smtp.messages == []  # the request only queued it
    assert [name for _when, name in app.extensions["portal.jobs"].pending()] == [
        "send_password_reset"
    ]
    app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now())
    assert len(smtp.messages) == 1


def test_the_link_ignores_the_host_header(client: FlaskClient, smtp: Inbox) -> None:
    evil = "http://evil.example"
    page = client.get("/password/forgot", base_url=evil).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token
    client.post(
        "/password/forgot",
        data={"csrf_token": token.group(1), "email": "admin@acme.test"},
        base_url=evil,
    )
    app = client.application
    app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now())
    body = smtp.messages[0].get_payload(decode=True).decode()
    assert "evil.example" not in body and "http://localhost/password/reset/" in body


def test_a_reset_asked_while_the_queue_refuses_waits_in_the_outbox_and_goes_out_once(
    app: Flask, client: FlaskClient, smtp: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    manual = app.extensions["portal.jobs"]

    class Down:
        def enqueue(self, *_args: Any, **_kwargs: Any) -> None:
            raise ConnectionError("redis is down")

    monkeypatch.setitem(app.extensions, "portal.jobs", Down())
    token = csrf_token(client, "/password/forgot")
    answer = client.post("/password/forgot", data={"csrf_token": token, "email": "admin@acme.test"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/login"
    assert smtp.messages == []  # not yet: nothing carried it to a worker
    assert [name for _when, name in manual.pending()] == ["send_password_reset"]
    assert manual.run_due() == 1  # what the dispatcher does once Redis answers
    assert manual.run_due() == 0  # and never again
    assert len(smtp.messages) == 1 and smtp.messages[0]["To"] == "admin@acme.test"


def test_unknown_email_gets_the_same_answer_and_no_mail(client: FlaskClient, smtp: Inbox) -> None:
    response = _forgot(client, "nobody@acme.test")
    assert response.headers["Location"] == "/login"
    assert "we&#39;ve sent it a link" in client.get("/login").get_data(as_text=True)
    assert smtp.messages == []


def test_reset_link_expires_after_an_hour(app: Flask, client: FlaskClient, smtp: Inbox) -> None:
    _forgot(client, "admin@acme.test")
    link = _reset_link(smtp)
    app.extensions["portal.clock"].advance(timedelta(hours=1, seconds=1))
    page = client.get(link)
    assert page.status_code == 400 and "This link has expired" in page.get_data(as_text=True)


def test_tampered_link_is_refused(client: FlaskClient, smtp: Inbox) -> None:
    _forgot(client, "admin@acme.test")
    link = _reset_link(smtp)
    assert client.get(link[:-3] + "abc").status_code == 400


def test_a_change_of_email_voids_an_outstanding_reset_link(
    client: FlaskClient, smtp: Inbox, db: Session
) -> None:
    from portal.models import PortalUser

    _forgot(client, "ap@acme.test")
    link = _reset_link(smtp)
    assert client.get(link).status_code == 200  # good until the address changes
    with tenancy.system(db):
        db.execute(
            update(PortalUser)
            .where(PortalUser.email == "ap@acme.test")
            .values(email="ap.moved@acme.test")
        )
        db.commit()
    page = client.get(link)
    assert page.status_code == 400 and "may have been used already" in page.get_data(as_text=True)


def test_without_mail_url_mail_is_written_to_files(app: Flask, client: FlaskClient) -> None:
    from pathlib import Path

    folder = Path(app.config["SETTINGS"].mail_dir)
    before = set(folder.glob("*.eml")) if folder.exists() else set()
    _forgot(client, "admin@acme.test")
    written = set(folder.glob("*.eml")) - before
    assert len(written) == 1
    assert b"/password/reset/" in next(iter(written)).read_bytes()


# the request does the same work for every address; the job does the rest ----------------


class RecordingQueue:
    """Stands in for the job queue and keeps what was handed to it."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, tuple[Any, ...]]] = []

    def enqueue(self, func: Any, *args: Any, job_id: str | None = None) -> None:
        self.jobs.append((func, args))


def _ask(client: FlaskClient, email: str, **headers: str) -> Any:
    token = csrf_token(client, "/password/forgot")
    return client.post(
        "/password/forgot", data={"csrf_token": token, "email": email}, headers=headers
    )


def test_forgot_does_the_same_work_for_any_address(
    app: Flask,
    client: FlaskClient,
    db: Session,
    count_queries: QueryCounter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same SQL (no lookup: that is the job's; one row of the outbox) and the same job, with
    arguments of the same shape, whether or not the address has an account."""
    queue = RecordingQueue()
    monkeypatch.setitem(app.extensions, "portal.jobs", queue)
    csrf_token(client, "/password/forgot")
    seen = []
    for email in ("ap@acme.test", "nobody@acme.test", "  AP@Acme.test "):
        count_queries.statements.clear()
        response = _ask(client, email, **{"Accept-Language": "de"})
        assert response.status_code == 302 and response.headers["Location"] == "/login"
        seen.append(list(count_queries.statements))
    assert seen[0] == seen[1] == seen[2]
    assert not any("portal_users" in s for s in seen[0])
    assert [func for func, _args in queue.jobs] == ["workers.jobs.run_work"] * 3
    rows = [db.get(Work, args[0]) for _func, args in queue.jobs]
    assert [row.job for row in rows if row] == ["workers.jobs.send_password_reset"] * 3
    shapes = [[type(a).__name__ for a in row.args] for row in rows if row]
    assert shapes == [["str", "str", "dict"]] * 3
    addresses = [row.args[0] for row in rows if row]
    assert addresses == ["ap@acme.test", "nobody@acme.test", "ap@acme.test"]  # normalized
    assert {row.args[1] for row in rows if row} == {"de"}  # the reader's language
    assert rows[0] is not None and set(rows[0].args[2]) == {"ip_address", "user_agent"}


def test_the_job_mails_only_an_account_with_a_public_url_link(
    app: Flask, client: FlaskClient, smtp: Inbox, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import jobs

    public = "https://billing.example.com"
    settings = dataclasses.replace(app.config["SETTINGS"], public_url=public)
    monkeypatch.setitem(app.config, "SETTINGS", settings)
    info = {"ip_address": "192.0.2.7", "user_agent": "test"}
    with app.app_context():
        assert jobs.send_password_reset("nobody@acme.test", "en", info) == "no account"
        assert smtp.messages == []
        assert jobs.send_password_reset("ap@acme.test", "en", info) == "sent"
    [message] = smtp.messages
    assert message["To"] == "ap@acme.test"
    body = message.get_payload(decode=True).decode()
    link = re.search(r"\S+/password/reset/\S+", body)
    assert link and link.group(0).startswith(f"{public}/password/reset/")
    path = link.group(0).removeprefix(public)
    assert "Choose a new password" in client.get(path).get_data(as_text=True)
    with tenancy.system(db):
        audited = db.scalars(
            select(AuditEvent).where(AuditEvent.name == "Portal.PasswordResetRequested")
        ).all()
    assert [(e.ip_address, e.user_id is not None) for e in audited] == [("192.0.2.7", True)]


def test_a_disabled_account_gets_no_mail(
    app: Flask, smtp: Inbox, db: Session, connection: Any
) -> None:
    from portal.models import PortalUser, UserStatus
    from workers import jobs

    with tenancy.system(db):
        db.execute(
            update(PortalUser)
            .where(PortalUser.email == "ap@acme.test")
            .values(status=UserStatus.DISABLED)
        )
        db.commit()
    with app.app_context():
        assert jobs.send_password_reset("ap@acme.test", "en", {}) == "no account"
    assert smtp.messages == []


@pytest.mark.parametrize(
    ("email", "profile", "reader", "subject"),
    [
        ("admin@globex.test", None, "de", "Passwort für das Rechnungsportal zurücksetzen"),
        ("ap@acme.test", "es_ES", "de", "Restablecer la contraseña del Portal de facturación"),
        ("ap@acme.test", None, "en", "Reset your Billing Portal password"),
    ],
)
def test_the_mail_is_in_the_users_language(
    client: FlaskClient,
    smtp: Inbox,
    db: Session,
    email: str,
    profile: str | None,
    reader: str,
    subject: str,
) -> None:
    """The profile's language, else the language the request was read in."""
    from portal.models import PortalUser

    with tenancy.system(db):
        db.execute(update(PortalUser).where(PortalUser.email == email).values(locale=profile))
        db.commit()
    token = csrf_token(client, "/password/forgot")
    client.post(
        "/password/forgot",
        data={"csrf_token": token, "email": email},
        headers={"Accept-Language": reader},
    )
    app = client.application
    app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now())
    [message] = smtp.messages
    assert str(make_header(decode_header(message["Subject"]))) == subject


def test_no_link_is_ever_built_from_the_request(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PUBLIC_URL there is no link at all (production refuses to start), never one from
    the Host header of whoever asked."""
    from portal.web import public_link

    settings = dataclasses.replace(app.config["SETTINGS"], public_url="")
    monkeypatch.setitem(app.config, "SETTINGS", settings)
    evil = app.test_request_context("/password/forgot", base_url="http://evil.example")
    with evil, pytest.raises(RuntimeError, match="PUBLIC_URL"):
        public_link("/password/reset/x")
