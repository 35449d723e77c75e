"""The second factor: mandatory, never replayable, enrolment, recovery codes, rate limits."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import AuditEvent, RecoveryCode
from tests.conftest import COOKIE, Auth, csrf_token, totp_code, user_by_email

WRONG_CODE = "That code didn&#39;t work."  # as escaped in the HTML


def test_a_used_code_cannot_be_replayed(app: Flask, auth: Auth) -> None:
    auth.login()
    code = totp_code(app)
    assert auth.code(code).headers["Location"] == "/portal/dashboard"
    auth.logout()
    auth.login()
    replay = auth.code(code)
    assert replay.status_code == 401 and WRONG_CODE in replay.get_data(as_text=True)


def test_a_code_one_step_old_still_works_but_two_do_not(app: Flask, auth: Auth) -> None:
    clock = app.extensions["portal.clock"]
    auth.login()
    old = pyotp.TOTP("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").at(clock.now() - timedelta(seconds=65))
    assert auth.code(old).status_code == 401
    recent = pyotp.TOTP("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").at(clock.now() - timedelta(seconds=30))
    assert auth.code(recent).status_code == 302


def _enrol(client: FlaskClient, auth: Auth, app: Flask) -> tuple[str, list[str]]:
    response = auth.login("new@acme.test")
    assert response.headers["Location"] == "/mfa/setup"
    page = client.get("/mfa/setup").get_data(as_text=True)
    assert "<svg" in page and 'role="img"' in page
    secret = re.search(r'<code class="secret" id="mfa-secret">([A-Z2-7]+)</code>', page)
    assert secret
    token = csrf_token(client, "/mfa/setup")
    wrong = client.post("/mfa/setup", data={"csrf_token": token, "code": "000000"})
    assert wrong.status_code == 422 and WRONG_CODE in wrong.get_data(as_text=True)
    right = client.post(
        "/mfa/setup", data={"csrf_token": token, "code": totp_code(app, secret.group(1))}
    )
    assert right.status_code == 200
    codes = re.findall(
        r"<li><code>([0-9a-f]{5}-[0-9a-f]{5})</code></li>", right.get_data(as_text=True)
    )
    return secret.group(1), codes


def test_enrolment_of_a_new_user(app: Flask, client: FlaskClient, auth: Auth, db: Session) -> None:
    assert client.get("/portal/dashboard").status_code == 302
    secret, codes = _enrol(client, auth, app)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "Welcome, Acme Corp" in client.get("/portal/dashboard").get_data(as_text=True)
    user = user_by_email(db, "new@acme.test")
    assert user.mfa_enrolled and secret.encode() not in (user.mfa_secret_encrypted or b"")
    with tenancy.system(db):
        stored = db.scalars(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user.id))
        hashes = set(stored)
        assert len(hashes) == 10 and not hashes & {c.replace("-", "") for c in codes}
        names = set(db.scalars(select(AuditEvent.name).where(AuditEvent.user_id == user.id)))
    assert "Portal.MfaEnrolled" in names


def test_an_enrolled_user_is_not_offered_setup_again(
    app: Flask, client: FlaskClient, auth: Auth
) -> None:
    auth.login()
    assert client.get("/mfa/setup").headers["Location"] == "/login/mfa"


def test_a_recovery_code_works_once(
    app: Flask, client: FlaskClient, auth: Auth, db: Session
) -> None:
    _, codes = _enrol(client, auth, app)
    auth.logout()
    auth.login("new@acme.test")
    assert auth.code(codes[0].upper()).headers["Location"] == "/portal/dashboard"
    auth.logout()
    auth.login("new@acme.test")
    again = auth.code(codes[0])
    assert again.status_code == 401
    with tenancy.system(db):
        names = db.scalars(select(AuditEvent.name)).all()
    assert "Portal.RecoveryCodeUsed" in names


def test_wrong_codes_count_toward_the_lockout(app: Flask, auth: Auth) -> None:
    auth.login("ap@acme.test")
    for _ in range(4):
        assert auth.code("123456").status_code == 401
    locked = auth.code("123456")
    assert "locked" in locked.get_data(as_text=True)
    refused = auth.code()  # the right code, refused while locked
    assert refused.status_code == 401 and "locked" in refused.get_data(as_text=True)


def test_half_signed_in_sessions_expire(app: Flask, client: FlaskClient, auth: Auth) -> None:
    auth.login()
    app.extensions["portal.clock"].advance(timedelta(minutes=10))
    assert client.get("/login/mfa").headers["Location"] == "/login"


def test_the_pre_mfa_session_id_is_dead_after_verification(
    app: Flask, client: FlaskClient, auth: Auth
) -> None:
    auth.login()
    half = client.get_cookie(COOKIE)
    assert half is not None
    auth.code()
    other = app.test_client()
    other.set_cookie(COOKIE, half.value)
    assert other.get("/login/mfa").headers["Location"] == "/login"
    assert other.get("/portal/dashboard").status_code == 302


def test_sign_in_is_rate_limited_per_address(client: FlaskClient) -> None:
    token = csrf_token(client)
    statuses = [
        client.post(
            "/login", data={"csrf_token": token, "email": f"x{i}@acme.test", "password": "x"}
        )
        for i in range(11)
    ]
    assert [r.status_code for r in statuses[:10]] == [401] * 10
    limited = statuses[10]
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert "Too many attempts" in limited.get_data(as_text=True)


def test_a_known_password_does_not_buy_fresh_code_guesses(app: Flask, auth: Auth) -> None:
    auth.login("ap@acme.test")
    for _ in range(4):
        assert auth.code("123456").status_code == 401
    assert auth.login("ap@acme.test").headers["Location"] == "/login/mfa"  # password again
    assert "locked" in auth.code("123456").get_data(as_text=True)  # the 5th failure locks
    assert "locked" in auth.code().get_data(as_text=True)
    app.extensions["portal.clock"].advance(timedelta(minutes=15, seconds=1))
    auth.login("ap@acme.test")
    assert auth.code().headers["Location"] == "/portal/dashboard"  # the window passed


def test_the_same_code_claimed_twice_passes_once(app: Flask, db: Session) -> None:
    from portal.services import mfa
    from portal.services.crypto import Keyring
    from tests.conftest import TEST_SECRET

    user = user_by_email(db, "admin@acme.test")
    code = totp_code(app)
    now = app.extensions["portal.clock"].now()
    first = mfa.verify_totp(db, user, code, keys=Keyring(TEST_SECRET), now=now)
    # a second request that read the user before the first one wrote
    from sqlalchemy.orm.attributes import set_committed_value

    set_committed_value(user, "mfa_last_step", None)
    second = mfa.verify_totp(db, user, code, keys=Keyring(TEST_SECRET), now=now)
    assert (first, second) == (True, False)
