"""A TOTP secret offered during enrolment belongs to the session it was shown to.

`new@acme.test` (the demo user not yet enrolled) signs in twice with the password, as the owner
and as someone else who knows it. Each session is offered its own secret; the one confirmed is
the only one that works afterwards.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import UserSession
from portal.services.crypto import Keyring
from tests.conftest import TEST_SECRET, Auth, csrf_token, totp_code, user_by_email

NEW = "new@acme.test"
SECRET = re.compile(r'<code class="secret" id="mfa-secret">([A-Z2-7]+)</code>')
KEYS = Keyring(TEST_SECRET)


def _offered(client: FlaskClient) -> str:
    page = client.get("/mfa/setup").get_data(as_text=True)
    match = SECRET.search(page)
    assert match, page
    return match.group(1)


def _confirm(client: FlaskClient, app: Flask, secret: str, path: str = "/mfa/setup") -> Any:
    token = csrf_token(client, path)
    return client.post(path, data={"csrf_token": token, "code": totp_code(app, secret)})


def _pending_secrets(db: Session) -> list[bytes | None]:
    user = user_by_email(db, NEW)
    with tenancy.system(db):
        return list(
            db.scalars(
                select(UserSession.mfa_pending_secret)
                .where(UserSession.user_id == user.id)
                .order_by(UserSession.id)
            )
        )


def _two_sessions(app: Flask) -> tuple[FlaskClient, FlaskClient]:
    owner, other = app.test_client(), app.test_client()
    for client in (owner, other):
        assert Auth(app, client).login(NEW).headers["Location"] == "/mfa/setup"
    return owner, other


def test_each_session_is_offered_its_own_secret(app: Flask, db: Session) -> None:
    owner, other = _two_sessions(app)
    assert _offered(owner) != _offered(other)
    assert user_by_email(db, NEW).mfa_secret_encrypted is None  # nothing on the user yet


def test_a_reload_shows_the_same_secret_and_writes_nothing(app: Flask, db: Session) -> None:
    client = app.test_client()
    Auth(app, client).login(NEW)
    first = _offered(client)
    stored = _pending_secrets(db)
    assert len(stored) == 1 and stored[0] is not None
    assert first.encode() not in stored[0]  # encrypted at rest
    for _ in range(3):
        assert _offered(client) == first
    assert _pending_secrets(db) == stored  # not rewritten by a GET


def test_only_the_confirmed_secret_works_and_the_others_are_discarded(
    app: Flask, db: Session
) -> None:
    owner, other = _two_sessions(app)
    mine, theirs = _offered(owner), _offered(other)
    assert _confirm(owner, app, mine).status_code == 200  # the recovery codes page
    assert owner.get("/portal/dashboard").status_code == 200
    user = user_by_email(db, NEW)
    assert user.mfa_enrolled
    assert KEYS.decrypt(user.mfa_secret_encrypted or b"")[0] == mine
    assert all(secret is None for secret in _pending_secrets(db))  # every offer discarded

    # The other session's secret buys nothing: setup is over, and its code is not the factor.
    app.extensions["portal.clock"].advance(timedelta(seconds=30))
    assert other.get("/mfa/setup").headers["Location"] == "/login/mfa"
    assert _confirm(other, app, theirs, "/login/mfa").status_code == 401
    assert other.get("/portal/dashboard").status_code == 302
    # A fresh sign-in by the other holder of the password meets the owner's factor only.
    stranger = Auth(app, app.test_client())
    stranger.login(NEW)
    assert stranger.code(totp_code(app, theirs)).status_code == 401
    assert stranger.code(totp_code(app, mine)).headers["Location"] == "/portal/dashboard"


def test_a_second_confirmation_loses_to_the_first(app: Flask, db: Session) -> None:
    """Both sessions post a right code for their own secret: the first enrols, the second is
    told the account already has two-step verification and sent to the code page."""
    owner, other = _two_sessions(app)
    mine, theirs = _offered(owner), _offered(other)
    other_token = csrf_token(other, "/mfa/setup")
    assert _confirm(owner, app, mine).status_code == 200
    lost = other.post(
        "/mfa/setup", data={"csrf_token": other_token, "code": totp_code(app, theirs)}
    )
    assert lost.status_code == 302 and lost.headers["Location"] == "/login/mfa"
    assert "already set up" in other.get("/login/mfa").get_data(as_text=True)
    user = user_by_email(db, NEW)
    assert KEYS.decrypt(user.mfa_secret_encrypted or b"")[0] == mine


def test_the_enrolling_code_cannot_sign_in_again(app: Flask, client: FlaskClient) -> None:
    auth = Auth(app, client)
    auth.login(NEW)
    secret = _offered(client)
    code = totp_code(app, secret)
    token = csrf_token(client, "/mfa/setup")
    assert client.post("/mfa/setup", data={"csrf_token": token, "code": code}).status_code == 200
    auth.logout()
    auth.login(NEW)
    assert auth.code(code).status_code == 401  # the step is spent


def test_two_confirmations_at_once_enrol_one(app: Flask, db: Session) -> None:
    """Two sessions that both read the user as not enrolled: the conditional update lets one
    through; the other is told so and changes nothing."""
    from portal.services import auth, mfa
    from portal.services.audit import RequestInfo
    from tests.web.test_lockout import WINDOW

    policy = auth.SessionPolicy(WINDOW, timedelta(hours=12), 5, WINDOW)
    now = app.extensions["portal.clock"].now()
    user = user_by_email(db, NEW)
    records = []
    for _ in range(2):
        token = auth.start_session(db, user, policy=policy, now=now, request=RequestInfo())
        records.append(auth.load_session(db, token, policy=policy, now=now))
    first, second = records
    assert first is not None and second is not None
    secrets = [mfa.pending_secret(r, keys=KEYS)[0] for r in records]
    code = [totp_code(app, s) for s in secrets]
    assert mfa.confirm_enrolment(db, first, code[0], keys=KEYS, now=now) is mfa.Enrolment.CONFIRMED
    outcome = mfa.confirm_enrolment(db, second, code[1], keys=KEYS, now=now)
    assert outcome is mfa.Enrolment.ALREADY_ENROLLED
    db.expire_all()
    assert KEYS.decrypt(user_by_email(db, NEW).mfa_secret_encrypted or b"")[0] == secrets[0]
