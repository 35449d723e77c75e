"""Password sign-in, server-side sessions, sign-out and the guard rails around them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import AuditEvent, UserSession
from tests.conftest import COOKIE, Auth, csrf_token

INCORRECT = "Incorrect email or password."


def test_login_page_has_the_contract_labels(client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    assert '<label class="field-label" for="email">Email</label>' in page
    assert '<label class="field-label" for="password">Password</label>' in page
    assert ">Sign in</button>" in page


def test_sign_in_needs_both_factors_then_reaches_the_dashboard(
    client: FlaskClient, auth: Auth
) -> None:
    response = auth.login()
    assert response.status_code == 302 and response.headers["Location"] == "/login/mfa"
    assert client.get("/portal/dashboard").status_code == 302  # not yet
    page = client.get("/login/mfa").get_data(as_text=True)
    assert '<label class="field-label" for="code">Authentication code</label>' in page
    assert ">Verify</button>" in page
    response = auth.code()
    assert response.headers["Location"] == "/portal/dashboard"
    assert "Welcome, Acme Corp" in client.get("/portal/dashboard").get_data(as_text=True)


def test_email_is_case_and_space_insensitive(auth: Auth) -> None:
    assert auth.login("  Admin@ACME.test ").status_code == 302


@pytest.mark.parametrize(
    ("email", "password"),
    [("admin@acme.test", "wrong-password"), ("nobody@acme.test", "portal-demo-2026")],
)
def test_wrong_password_and_unknown_email_get_the_same_answer(
    client: FlaskClient, auth: Auth, email: str, password: str
) -> None:
    response = auth.login(email, password)
    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert INCORRECT in page
    assert 'value="portal-demo-2026"' not in page  # the password is never echoed back
    assert client.get("/portal/dashboard").status_code == 302


def test_empty_form_is_explained_field_by_field(client: FlaskClient) -> None:
    response = client.post("/login", data={"csrf_token": csrf_token(client), "email": "x"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Enter a valid email address." in page and "Enter your password." in page
    assert 'value="x"' in page  # what was typed is kept


def test_login_attempts_are_audited_without_the_password(db: Session, auth: Auth) -> None:
    auth.login("admin@acme.test", "wrong-password")
    auth.login()
    with tenancy.system(db):
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.name == "Portal.Login").order_by(AuditEvent.id)
        ).all()
    assert [e.properties["success"] for e in events[-2:]] == [False, True]
    for event in events[-2:]:
        assert event.ip_address == "127.0.0.1" and event.properties["customer_id"].startswith(
            "cmp_"
        )
        assert "portal-demo-2026" not in str(event.properties)
        assert "wrong-password" not in str(event.properties)


def test_five_failures_lock_the_account_until_the_window_passes(app: Flask, auth: Auth) -> None:
    for _ in range(4):
        assert INCORRECT in auth.login("ap@acme.test", "nope").get_data(as_text=True)
    locked = auth.login("ap@acme.test", "nope")
    assert "locked" in locked.get_data(as_text=True)
    refused = auth.login("ap@acme.test")  # the right password, still refused
    assert refused.status_code == 401 and "locked" in refused.get_data(as_text=True)
    app.extensions["portal.clock"].advance(timedelta(minutes=15, seconds=1))
    assert auth.login("ap@acme.test").status_code == 302


def test_dashboard_requires_sign_in_and_comes_back_after(client: FlaskClient, auth: Auth) -> None:
    response = client.get("/portal/dashboard")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/portal/dashboard")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'name="next" type="hidden" value="/portal/dashboard?"' in page


@pytest.mark.parametrize(
    "target", ["https://elsewhere.example/", "//elsewhere.example", "/\\elsewhere.example"]
)
def test_next_only_goes_to_local_paths(auth: Auth, target: str) -> None:
    assert auth.sign_in(next=target).headers["Location"] == "/portal/dashboard"


def test_next_local_path_is_followed(auth: Auth) -> None:
    response = auth.sign_in(next="/portal/dashboard?x=1")
    assert response.headers["Location"] == "/portal/dashboard?x=1"


def test_sign_out_ends_the_session_on_the_server(
    app: Flask, client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in()
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    assert auth.logout().headers["Location"] == "/login"
    with tenancy.system(db):
        record = db.scalars(select(UserSession).order_by(UserSession.id.desc())).first()
        ended = db.scalars(select(AuditEvent).where(AuditEvent.name == "Portal.SessionEnded"))
        assert [e.properties["reason"] for e in ended] == ["signed_out"]
    assert record is not None and record.revoked_at is not None
    replay = app.test_client()
    replay.set_cookie(COOKIE, cookie.value)
    assert replay.get("/portal/dashboard").status_code == 302


def test_idle_and_absolute_expiry(app: Flask, client: FlaskClient, auth: Auth) -> None:
    auth.sign_in()
    clock = app.extensions["portal.clock"]
    clock.advance(timedelta(minutes=29))
    assert client.get("/portal/dashboard").status_code == 200
    clock.advance(timedelta(minutes=31))
    expired = client.get("/portal/dashboard")
    assert expired.status_code == 302
    assert "Session expired. Please log in again." in client.get("/login").get_data(as_text=True)
    auth.sign_in()
    elapsed = timedelta(0)
    while elapsed < timedelta(hours=13):  # active every 29 minutes: never idle
        clock.advance(timedelta(minutes=29))
        elapsed += timedelta(minutes=29)
        if client.get("/portal/dashboard").status_code != 200:
            break
    assert timedelta(hours=12) <= elapsed < timedelta(hours=12, minutes=29)


def test_post_without_csrf_token_is_refused(client: FlaskClient) -> None:
    response = client.post("/login", data={"email": "admin@acme.test", "password": "x"})
    assert response.status_code == 400
    assert "Your form expired" in response.get_data(as_text=True)


def test_sign_in_rotates_the_cookie(client: FlaskClient, auth: Auth) -> None:
    client.get("/login")
    before = client.get_cookie(COOKIE)
    auth.login()
    between = client.get_cookie(COOKIE)
    auth.code()
    after = client.get_cookie(COOKIE)
    assert before is not None and between is not None and after is not None
    assert len({before.value, between.value, after.value}) == 3


def test_stay_signed_in_counts_as_activity(app: Flask, client: FlaskClient, auth: Auth) -> None:
    auth.sign_in()
    clock = app.extensions["portal.clock"]
    clock.advance(timedelta(minutes=29))
    token = csrf_token(client, "/portal/dashboard")
    clock.advance(timedelta(seconds=30))
    extended = client.post(
        "/session/extend", data={"csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert extended.status_code == 204
    clock.advance(timedelta(minutes=29))
    assert client.get("/portal/dashboard").status_code == 200
    plain = client.post("/session/extend", data={"csrf_token": token, "next": "/portal/security"})
    assert plain.headers["Location"] == "/portal/security"


def test_signed_out_htmx_request_is_sent_to_sign_in_as_a_whole_page(client: FlaskClient) -> None:
    """htmx follows HX-Redirect whatever the status; the 401 still says why (web.go)."""
    response = client.get(
        "/portal/invoices?status=open",
        headers={"HX-Request": "true", "HX-Target": "invoice-results"},
    )
    assert response.status_code == 401 and response.get_data(as_text=True) == ""
    assert response.headers["HX-Redirect"] == "/login?next=/portal/invoices?status%3Dopen"
    plain = client.get("/portal/invoices")
    assert plain.status_code == 302 and plain.headers["Location"].startswith("/login?next=")


def test_cookie_is_host_only_secure_and_strict_headers_outside_development(
    client: FlaskClient, auth: Auth
) -> None:
    response = auth.login()
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax"):
        assert attribute in cookie
    assert "Domain=" not in cookie
    assert "max-age=" in client.get("/login").headers["Strict-Transport-Security"]


def test_unknown_email_locks_like_a_real_account(auth: Auth) -> None:
    answers = [auth.login("ghost@acme.test", "nope").get_data(as_text=True) for _ in range(5)]
    real = [auth.login("ap@acme.test", "nope").get_data(as_text=True) for _ in range(5)]
    for ghost_page, real_page in zip(answers, real, strict=True):
        assert ("locked" in ghost_page) == ("locked" in real_page)
    assert "locked" in answers[-1]
