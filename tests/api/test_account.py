"""The API's account endpoints: login for a token, the profile, notification preferences."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import ApiToken, AuditEvent, TokenKind, TokenScope
from portal.services import seed
from tests.api.conftest import PROBLEM, SpecCheck
from tests.conftest import Auth, csrf_token, totp_code

Bearer = Callable[..., dict[str, str]]


def _login(app: Flask, client: FlaskClient, email: str = "admin@acme.test", **over: Any) -> Any:
    app.extensions["portal.clock"].advance(timedelta(seconds=30))  # never a replayed code
    body = {"email": email, "password": seed.DEMO_PASSWORD, "code": totp_code(app), **over}
    return client.post("/api/portal/login", json=body)


def _events(db: Session, name: str) -> list[AuditEvent]:
    with tenancy.system(db):
        return list(db.scalars(select(AuditEvent).where(AuditEvent.name == name)))


# login --------------------------------------------------------------------------------------


def test_login_hands_out_a_short_lived_read_and_pay_token(
    app: Flask, client: FlaskClient, db: Session, spec_check: SpecCheck
) -> None:
    response = _login(app, client)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = spec_check(response, "/api/portal/login", "post")
    assert body["token"].startswith("pt_") and body["scope"] == "read+pay"
    with tenancy.system(db):
        token = db.scalars(select(ApiToken).where(ApiToken.kind == TokenKind.LOGIN)).one()
        assert token.token_hash != body["token"] and body["token"] not in token.token_hash
        assert token.expires_at - token.created_at == timedelta(hours=1)
    me = client.get("/api/portal/profile", headers={"Authorization": f"Bearer {body['token']}"})
    assert spec_check(me, "/api/portal/profile")["email"] == "admin@acme.test"
    logins = [e for e in _events(db, "Portal.Login") if e.properties.get("success")]
    assert {e.properties["factor"] for e in logins} >= {"password", "totp"}


@pytest.mark.parametrize(
    "change",
    [{"password": "wrong-password"}, {"email": "nobody@acme.test"}, {"email": "ADMIN@acme.test "}],
)
def test_wrong_credentials_are_401_with_the_sign_in_copy(
    app: Flask, client: FlaskClient, spec_check: SpecCheck, change: dict[str, str]
) -> None:
    response = _login(app, client, **change)
    if change.get("email", "").strip().lower() == "admin@acme.test":
        assert response.status_code == 200  # the address is normalized as on /login
        return
    assert response.status_code == 401
    body = spec_check(response, "/api/portal/login", "post")
    assert body["detail"] == "Incorrect email or password."  # unknown or wrong: the same


def test_a_wrong_code_is_401_and_counts_toward_the_lockout(
    app: Flask, client: FlaskClient, db: Session, spec_check: SpecCheck
) -> None:
    threshold = app.config["SETTINGS"].lockout_threshold
    for _n in range(threshold - 1):
        response = _login(app, client, code="000000")
        assert response.status_code == 401
        body = spec_check(response, "/api/portal/login", "post")
        assert "code didn't work" in body["detail"]
    locked = _login(app, client, code="000000")
    assert locked.status_code == 429
    body = spec_check(locked, "/api/portal/login", "post")
    assert "locked" in body["detail"] and int(locked.headers["Retry-After"]) > 0
    assert _events(db, "Portal.AccountLocked")
    # Locked: even the right code is refused, as on the web
    assert _login(app, client).status_code == 429


def test_a_code_is_not_accepted_twice(app: Flask, client: FlaskClient) -> None:
    first = _login(app, client)
    assert first.status_code == 200
    again = client.post(
        "/api/portal/login",
        json={"email": "admin@acme.test", "password": seed.DEMO_PASSWORD, "code": totp_code(app)},
    )
    assert again.status_code == 401


def test_a_user_without_two_step_verification_gets_no_token(
    app: Flask, client: FlaskClient, spec_check: SpecCheck
) -> None:
    response = _login(app, client, "new@acme.test")
    assert response.status_code == 403
    assert "two-step verification" in spec_check(response, "/api/portal/login", "post")["detail"]


def test_login_is_rate_limited_per_client_address(app: Flask, client: FlaskClient) -> None:
    answers = [
        client.post(
            "/api/portal/login", json={"email": f"x{n}@acme.test", "password": "x", "code": "1"}
        )
        for n in range(11)
    ]
    assert [a.status_code for a in answers[:10]] == [401] * 10
    limited = answers[10]
    assert limited.status_code == 429 and limited.mimetype == PROBLEM
    assert int(limited.headers["Retry-After"]) > 0
    assert "Too many attempts" in limited.get_json()["detail"]


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=20),
        st.dictionaries(
            st.sampled_from(["email", "password", "code", "x"]),
            st.one_of(st.none(), st.integers(), st.text(max_size=300), st.lists(st.integers())),
        ),
    )
)
def test_any_login_body_is_answered_without_a_server_error(
    client: FlaskClient, spec_check: SpecCheck, body: Any
) -> None:
    from portal.extensions import limiter

    limiter.reset()
    response = client.post("/api/portal/login", json=body)
    assert response.status_code in {400, 401, 415}, response.get_data(as_text=True)
    spec_check(response, "/api/portal/login", "post")


# profile ------------------------------------------------------------------------------------


def test_profile_reads_and_changes_with_the_pages_checks(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, db: Session
) -> None:
    headers = bearer()
    shown = spec_check(client.get("/api/portal/profile", headers=headers), "/api/portal/profile")
    assert shown["email"] == "admin@acme.test" and shown["company"] == "Acme Corp"
    changed = client.patch(
        "/api/portal/profile",
        json={"phone": "+1 415 555 0123", "timezone": "Europe/Berlin", "job_title": "CFO"},
        headers=headers,
    )
    assert changed.status_code == 200, changed.get_data(as_text=True)
    body = spec_check(changed, "/api/portal/profile", "patch")
    assert body["phone"] == "+14155550123" and body["timezone"] == "Europe/Berlin"
    assert body["name"] == shown["name"]  # not sent: unchanged
    event = _events(db, "Portal.ProfileUpdated")[-1]
    assert set(event.properties["changed_fields"]) == {"phone", "timezone", "job_title"}


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        ({"name": ""}, "name", "Enter your name."),
        ({"name": None}, "name", "Enter your name."),
        ({"phone": "12"}, "phone", "Enter a valid phone number"),
        ({"timezone": "US/Eastern"}, "timezone", "Choose a time zone from the list."),
        ({"timezone": "Mars/Olympus"}, "timezone", "Choose a time zone from the list."),
        ({"locale": "xx"}, "locale", "Not a valid choice."),
        ({"job_title": "x" * 101}, "job_title", None),
    ],
)
def test_profile_refusals_name_the_field_with_the_pages_words(
    client: FlaskClient,
    bearer: Bearer,
    spec_check: SpecCheck,
    patch: dict[str, Any],
    field: str,
    message: str | None,
) -> None:
    response = client.patch("/api/portal/profile", json=patch, headers=bearer())
    assert response.status_code == 422, response.get_data(as_text=True)
    body = spec_check(response, "/api/portal/profile", "patch")
    assert [e["field"] for e in body["errors"]] == [field]
    if message:
        assert body["errors"][0]["message"] == message


def test_profile_language_can_be_cleared(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck
) -> None:
    headers = bearer()
    assert (
        client.patch("/api/portal/profile", json={"locale": "de"}, headers=headers).status_code
        == 200
    )
    cleared = client.patch("/api/portal/profile", json={"locale": None}, headers=headers)
    assert spec_check(cleared, "/api/portal/profile", "patch")["locale"] is None


def test_a_read_only_token_reads_but_does_not_change(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck
) -> None:
    headers = bearer(scope=TokenScope.READ)
    assert client.get("/api/portal/profile", headers=headers).status_code == 200
    assert client.get("/api/portal/notifications", headers=headers).status_code == 200
    refused = client.patch("/api/portal/profile", json={"name": "X"}, headers=headers)
    assert refused.status_code == 403
    assert "only read" in spec_check(refused, "/api/portal/profile", "patch")["detail"]
    refused = client.put("/api/portal/notifications", json={"remind_days": 7}, headers=headers)
    assert refused.status_code == 403
    spec_check(refused, "/api/portal/notifications", "put")


def test_the_session_needs_the_csrf_header_to_change(
    signed_in: Auth, spec_check: SpecCheck
) -> None:
    client = signed_in.client
    assert client.get("/api/portal/profile").status_code == 200
    refused = client.patch("/api/portal/profile", json={"job_title": "Boss"})
    assert refused.status_code == 403
    assert refused.mimetype == PROBLEM
    refused = client.put("/api/portal/notifications", json={"remind_days": 7})
    assert refused.status_code == 403
    token = csrf_token(client, "/portal/dashboard")
    changed = client.patch(
        "/api/portal/profile", json={"job_title": "Boss"}, headers={"X-CSRFToken": token}
    )
    assert spec_check(changed, "/api/portal/profile", "patch")["job_title"] == "Boss"


def test_no_credentials_is_401(client: FlaskClient, spec_check: SpecCheck) -> None:
    for method, path in (("get", "/api/portal/profile"), ("put", "/api/portal/notifications")):
        response = getattr(client, method)(path, json={})
        assert response.status_code == 401
        spec_check(response, path, method)


# notifications ------------------------------------------------------------------------------


def test_notification_preferences_read_and_change(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, db: Session
) -> None:
    headers = bearer("ap@acme.test")
    shown = spec_check(
        client.get("/api/portal/notifications", headers=headers), "/api/portal/notifications"
    )
    assert len(shown["topics"]) == 11 and shown["remind_days"] in (1, 3, 7, 14)
    first = shown["topics"][0]
    body = {
        "remind_days": 14,
        "topics": [{"topic": first["topic"], "email": not first["email"], "portal": True}],
    }
    changed = client.put("/api/portal/notifications", json=body, headers=headers)
    assert changed.status_code == 200, changed.get_data(as_text=True)
    after = spec_check(changed, "/api/portal/notifications", "put")
    assert after["remind_days"] == 14
    assert after["topics"][0]["email"] is (not first["email"])
    assert after["topics"][1:] == shown["topics"][1:]  # left out: unchanged
    assert _events(db, "Portal.NotificationPreferencesUpdated")
    # security alerts: always on, whatever is sent
    off = {"topic": "security_alert", "email": False, "portal": False}
    kept = client.put(
        "/api/portal/notifications", json={"remind_days": 14, "topics": [off]}, headers=headers
    )
    alert = next(t for t in kept.get_json()["topics"] if t["topic"] == "security_alert")
    assert alert == {"topic": "security_alert", "email": True, "portal": True, "always_on": True}
    assert not any(t["always_on"] for t in after["topics"] if t["topic"] != "security_alert")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"remind_days": 5}, 422, "remind_days"),
        (
            {
                "remind_days": 3,
                "topics": [{"topic": "invoice_issued", "email": True, "portal": True}] * 2,
            },
            422,
            "topics",
        ),
        (
            {"remind_days": 3, "topics": [{"topic": "nope", "email": True, "portal": True}]},
            400,
            None,
        ),
        ({"remind_days": "often"}, 400, None),
        ({}, 400, None),
    ],
)
def test_notification_refusals(
    client: FlaskClient,
    bearer: Bearer,
    spec_check: SpecCheck,
    body: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    response = client.put("/api/portal/notifications", json=body, headers=bearer())
    assert response.status_code == status, response.get_data(as_text=True)
    problem = spec_check(response, "/api/portal/notifications", "put")
    if field:
        assert [e["field"] for e in problem["errors"]] == [field]
    if field == "remind_days":
        assert problem["errors"][0]["message"] == "Choose how many days before the due date."


def test_a_body_that_is_not_json_is_415(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck
) -> None:
    headers = bearer()
    for method, path in (
        ("post", "/api/portal/login"),
        ("patch", "/api/portal/profile"),
        ("put", "/api/portal/notifications"),
    ):
        response = getattr(client, method)(path, data={"email": "x", "name": "y"}, headers=headers)
        assert response.status_code == 415, (path, response.get_data(as_text=True))
        assert spec_check(response, path, method)["detail"] == "Send the request body as JSON."


def test_a_nul_in_a_json_body_is_400_not_a_database_error(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck
) -> None:
    for body in ({"job_title": "a\x00b"}, {"name\x00": "x"}, {"name": ["\x00"]}):
        response = client.patch("/api/portal/profile", json=body, headers=bearer())
        assert response.status_code == 400
        spec_check(response, "/api/portal/profile", "patch")


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.dictionaries(
        st.sampled_from(["name", "phone", "job_title", "locale", "timezone", "number_locale"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=120)),
    )
)
def test_any_profile_patch_is_answered_without_a_server_error(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, body: dict[str, Any]
) -> None:
    response = client.patch("/api/portal/profile", json=body, headers=bearer())
    assert response.status_code in {200, 400, 422}, response.get_data(as_text=True)
    spec_check(response, "/api/portal/profile", "patch")
