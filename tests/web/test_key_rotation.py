"""Rotating SECRET_KEY: the old key goes to SECRET_KEY_FALLBACKS and nothing breaks.

The same database is served by three apps in turn, as three restarts would: under key A, then
under key B with A as a fallback, then under B alone.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.gateways import sandbox
from portal.models import SecurityAlert
from portal.services import crypto
from portal.services.crypto import Keyring
from tests.conftest import COOKIE, TEST_SECRET, Auth, Backend, Inbox, csrf_token, totp_code
from tests.conftest import user_by_email as _user_by_email
from tests.web.security_helpers import dispose, shared_transaction

KEY_A = TEST_SECRET  # the key the demo data (and the session-wide app) was made with
KEY_B = "rotated-key-" + "b" * 40
NEW = "new@acme.test"
SECRET = re.compile(r'<code class="secret" id="mfa-secret">([A-Z2-7]+)</code>')
CODES = re.compile(r"<li><code>([0-9a-f]{5}-[0-9a-f]{5})</code></li>")
NEW_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def rotated(backend: Backend) -> Iterator[tuple[Flask, Flask]]:
    """Restarted with SECRET_KEY=B and SECRET_KEY_FALLBACKS=A, and with B alone."""
    from tests.conftest import make_app

    with_fallback = make_app(backend, secret_key=KEY_B, secret_key_fallbacks=KEY_A)
    alone = make_app(backend, secret_key=KEY_B)
    yield with_fallback, alone
    dispose(with_fallback, alone)


@pytest.fixture
def apps(app: Flask, rotated: tuple[Flask, Flask]) -> Iterator[tuple[Flask, Flask, Flask]]:
    with shared_transaction(app, *rotated):
        # Each restart happens a little later: no code is ever a replay of the one before.
        for offset, each in enumerate(rotated, start=1):
            each.extensions["portal.clock"].advance(timedelta(minutes=offset))
        yield (app, *rotated)


def _db(app: Flask) -> Session:
    session: Session = app.extensions["portal.db"].sessionmaker()
    return session


def user_by_email(app: Flask, email: str) -> Any:
    session = _db(app)
    try:
        return _user_by_email(session, email)
    finally:
        session.close()


def _enrol(app: Flask, client: FlaskClient) -> tuple[str, list[str]]:
    assert Auth(app, client).login(NEW).headers["Location"] == "/mfa/setup"
    page = client.get("/mfa/setup").get_data(as_text=True)
    match = SECRET.search(page)
    assert match
    token = csrf_token(client, "/mfa/setup")
    done = client.post(
        "/mfa/setup", data={"csrf_token": token, "code": totp_code(app, match.group(1))}
    )
    codes = CODES.findall(done.get_data(as_text=True))
    assert done.status_code == 200 and len(codes) == 10
    return match.group(1), codes


def _reset_link(app: Flask, client: FlaskClient, inbox: Inbox, email: str) -> str:
    token = csrf_token(client, "/password/forgot")
    client.post("/password/forgot", data={"csrf_token": token, "email": email})
    app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now())
    body = inbox.messages[-1].get_payload(decode=True).decode()
    match = re.search(r"http://localhost(/password/reset/\S+)", body)
    assert match
    return match.group(1)


def _sign_in_with_code(app: Flask, email: str, code: str) -> Any:
    auth = Auth(app, app.test_client())
    assert auth.login(email).headers["Location"] == "/login/mfa"
    return auth.code(code)


def test_everything_made_under_the_old_key_still_works_during_rotation(
    apps: tuple[Flask, Flask, Flask], smtp: Inbox
) -> None:
    under_a, under_b, b_alone = apps
    secret, codes = _enrol(under_a, under_a.test_client())
    link = _reset_link(under_a, under_a.test_client(), smtp, NEW)
    stored_under_a = user_by_email(under_a, NEW).mfa_secret_encrypted
    assert crypto.decrypt(KEY_A, stored_under_a) == secret

    # Restart: SECRET_KEY=B, SECRET_KEY_FALLBACKS=A. Password + TOTP signs in...
    signed_in = _sign_in_with_code(under_b, NEW, totp_code(under_b, secret))
    assert signed_in.headers["Location"] == "/portal/dashboard"
    # ...and the secret is now stored under B, readable with B alone.
    stored = user_by_email(under_b, NEW).mfa_secret_encrypted
    assert stored != stored_under_a
    assert Keyring(KEY_B).decrypt(stored) == (secret, False)
    # A recovery code and a reset link issued under A still work.
    recovered = _sign_in_with_code(under_b, NEW, codes[0])
    assert recovered.headers["Location"] == "/portal/dashboard"
    client = under_b.test_client()
    assert "Choose a new password" in client.get(link).get_data(as_text=True)

    # Restart with B alone: the re-encrypted secret still works.
    b_alone.extensions["portal.clock"].advance(timedelta(minutes=1))
    again = _sign_in_with_code(b_alone, NEW, totp_code(b_alone, secret))
    assert again.headers["Location"] == "/portal/dashboard"
    # What only A could open is refused now, with the usual answers (never a 500).
    assert b_alone.test_client().get(link).status_code == 400
    assert _sign_in_with_code(b_alone, NEW, codes[1]).status_code == 401


def test_sessions_and_forms_signed_with_the_old_key(apps: tuple[Flask, Flask, Flask]) -> None:
    under_a, under_b, b_alone = apps
    client_a = under_a.test_client()
    Auth(under_a, client_a).sign_in()
    form_token = csrf_token(client_a, "/portal/dashboard")
    cookie = client_a.get_cookie(COOKIE)
    assert cookie is not None

    def carrying_the_cookie(app: Flask) -> FlaskClient:
        client = app.test_client()
        client.set_cookie(COOKIE, cookie.value)
        return client

    # With A among the fallbacks: still signed in, and a form from before the restart posts.
    kept = carrying_the_cookie(under_b)
    assert kept.get("/portal/dashboard").status_code == 200
    posted = kept.post("/session/extend", data={"csrf_token": form_token})
    assert posted.status_code == 302 and posted.headers["Location"] == "/portal/dashboard"

    # With B alone: signed out, and an old form gets "Your form expired", never a 500.
    gone = carrying_the_cookie(b_alone)
    assert gone.get("/portal/dashboard").headers["Location"].startswith("/login")
    expired = gone.post("/session/extend", data={"csrf_token": form_token})
    assert expired.status_code == 400
    assert "Your form expired" in expired.get_data(as_text=True)


def test_a_secret_whose_key_is_gone_is_a_clear_message_not_a_500(
    apps: tuple[Flask, Flask, Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """admin@acme.test's secret was made under A; B alone cannot open it."""
    _under_a, _under_b, b_alone = apps
    with caplog.at_level(logging.ERROR):
        refused = _sign_in_with_code(b_alone, "admin@acme.test", totp_code(b_alone))
    page = refused.get_data(as_text=True)
    assert refused.status_code == 401
    assert "can&#39;t check codes for this account right now" in page
    assert "Contact your company" in page and "Traceback" not in page
    assert any("cannot be decrypted" in r.getMessage() for r in caplog.records)


def test_sandbox_webhooks_signed_with_the_old_key(apps: tuple[Flask, Flask, Flask]) -> None:
    under_a, under_b, b_alone = apps
    body = json.dumps(
        {
            "id": "evt_rotation",
            "type": "charge.succeeded",
            "data": {"reference": "sandbox_ch_unknown", "status": "succeeded"},
        }
    ).encode()
    signature = sandbox.sign(body, sandbox.signing_secret(KEY_A), int(time.time()))

    def deliver(app: Flask) -> int:
        answer = app.test_client().post(
            "/webhooks/sandbox",
            data=body,
            headers={sandbox.SIGNATURE_HEADER: signature, "Content-Type": "application/json"},
        )
        return answer.status_code

    assert deliver(under_b) == 200  # verified (an unknown charge: ignored)
    assert deliver(b_alone) == 400  # not signed with any key of this app's
    current = sandbox.sign(body, sandbox.signing_secret(KEY_B), int(time.time()))
    assert under_a.config["SECRET_KEY"] == KEY_A and current != signature


def test_reencrypt_stores_every_secret_under_the_new_key(
    apps: tuple[Flask, Flask, Flask],
) -> None:
    _under_a, under_b, b_alone = apps
    before = user_by_email(under_b, "admin@acme.test").mfa_secret_encrypted
    with pytest.raises(crypto.Unreadable):
        Keyring(KEY_B).decrypt(before)
    # Without the old key among the fallbacks, it says what it cannot open, and fails.
    refused = b_alone.test_cli_runner().invoke(args=["keys", "reencrypt"])
    assert refused.exit_code != 0 and "open with none of the configured keys" in refused.output
    done = under_b.test_cli_runner().invoke(args=["keys", "reencrypt"])
    assert done.exit_code == 0, done.output
    assert re.search(r"re-encrypted [1-9]\d* secret", done.output)
    after = user_by_email(under_b, "admin@acme.test").mfa_secret_encrypted
    assert Keyring(KEY_B).decrypt(after)[1] is False  # the current key opens it
    b_alone.extensions["portal.clock"].advance(timedelta(minutes=2))
    signed_in = _sign_in_with_code(b_alone, "admin@acme.test", totp_code(b_alone))
    assert signed_in.headers["Location"] == "/portal/dashboard"
    # Nothing is left for the old key: B alone opens everything now.
    again = b_alone.test_cli_runner().invoke(args=["keys", "reencrypt"])
    assert again.exit_code == 0 and "re-encrypted 0 secret" in again.output


def test_an_operator_resets_a_factor_whose_key_is_gone(apps: tuple[Flask, Flask, Flask]) -> None:
    _under_a, _under_b, b_alone = apps
    cli = b_alone.test_cli_runner()
    done = cli.invoke(args=["users", "reset-mfa", "ap@acme.test"])
    assert done.exit_code == 0, done.output
    assert user_by_email(b_alone, "ap@acme.test").mfa_enrolled is False
    session = _db(b_alone)  # the user is alerted (and the alert audited)
    try:
        with tenancy.system(session):
            user = _user_by_email(session, "ap@acme.test")
            kinds = session.scalars(
                select(SecurityAlert.kind).where(SecurityAlert.user_id == user.id)
            ).all()
    finally:
        session.close()
    assert kinds == ["mfa_reset"]
    auth = Auth(b_alone, b_alone.test_client())
    assert auth.login("ap@acme.test").headers["Location"] == "/mfa/setup"
    unknown = cli.invoke(args=["users", "reset-mfa", "nobody@acme.test"])
    assert unknown.exit_code != 0 and "no user" in unknown.output
