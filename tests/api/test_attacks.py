"""The portal API attacked from outside: sign-in for every role, mixed credentials, scopes on
every unsafe operation, cursors and amounts that are not what they claim, what ends a token."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import ApiToken, Statement, TokenKind, TokenScope, UserStatus
from portal.services import audit, seed, users
from tests.api.conftest import PROBLEM, SpecCheck, issue_token
from tests.conftest import Auth, totp_code, user_by_email
from tests.factories import account_named, make_invoice, minor
from tests.web.payment_helpers import invoice, method

Bearer = Callable[..., dict[str, str]]
LOGIN = "/api/portal/login"
INFO = audit.RequestInfo(user_agent="test")


def _login(app: Flask, client: FlaskClient, email: str) -> Any:
    app.extensions["portal.clock"].advance(timedelta(seconds=30))  # never a replayed code
    body = {"email": email, "password": seed.DEMO_PASSWORD, "code": totp_code(app)}
    return client.post(LOGIN, json=body)


# sign-in -----------------------------------------------------------------------------------


@pytest.mark.parametrize("email", ["admin@acme.test", "ap@acme.test", "admin@globex.test"])
def test_every_demo_role_gets_a_token_that_reads_its_scope(
    app: Flask, client: FlaskClient, db: Session, spec_check: SpecCheck, email: str
) -> None:
    """A customer restricted to some billing accounts signs in too (their grants are read
    before any tenant scope is bound: once a 500)."""
    response = _login(app, client, email)
    assert response.status_code == 200, response.get_data(as_text=True)
    token = spec_check(response, LOGIN, "post")["token"]
    profile = client.get("/api/portal/profile", headers={"Authorization": f"Bearer {token}"})
    assert profile.status_code == 200
    assert spec_check(profile, "/api/portal/profile")["email"] == email


# a browser session and a bearer token together ---------------------------------------------


@pytest.mark.parametrize("token_of", ["admin@globex.test", "admin@acme.test"])
def test_a_half_signed_in_browser_with_anothers_token_is_401(
    client: FlaskClient, auth: Auth, bearer: Bearer, spec_check: SpecCheck, token_of: str
) -> None:
    """The password given, the code still to come (the session's scope is bound already): a
    token of anyone else is refused like with a fully signed-in session, never a 500."""
    auth.app.extensions["portal.clock"].advance(timedelta(seconds=30))
    assert auth.login("ap@acme.test").headers["Location"] == "/login/mfa"
    response = client.get("/api/portal/dashboard", headers=bearer(token_of))
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    assert "another user" in spec_check(response, "/api/portal/dashboard")["detail"]


def test_a_half_signed_in_browser_with_its_own_users_token_reads(
    client: FlaskClient, auth: Auth, bearer: Bearer, spec_check: SpecCheck
) -> None:
    auth.app.extensions["portal.clock"].advance(timedelta(seconds=30))
    auth.login("ap@acme.test")
    response = client.get("/api/portal/profile", headers=bearer("ap@acme.test"))
    assert response.status_code == 200
    assert spec_check(response, "/api/portal/profile")["email"] == "ap@acme.test"


# scopes ------------------------------------------------------------------------------------


def _unsafe_operations(client: FlaskClient) -> list[tuple[str, str]]:
    document = client.get("/api/openapi.json").get_json()
    return [
        (path, method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if path.startswith("/api/portal/") and method != "get" and operation.get("security")
    ]


def test_a_read_only_token_is_refused_every_unsafe_operation(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck
) -> None:
    """Read-only means GET only, enforced once for every route (POST /statements forgot it):
    a 403 the spec documents, whatever the body, before anything is read or made."""
    headers = bearer(scope=TokenScope.READ)
    operations = _unsafe_operations(client)
    assert ("/api/portal/statements", "post") in operations
    assert ("/api/portal/payment", "post") in operations
    for path, verb in operations:
        url = path.replace("{public_id}", "x")
        for body in ({}, {"start_date": "2026-01-01", "end_date": "2026-01-31"}):
            sent = {**headers, "Idempotency-Key": "read-only"}
            response = client.open(url, method=verb.upper(), json=body, headers=sent)
            assert response.status_code == 403, (verb, path, response.get_data(as_text=True))
            assert "may only read" in spec_check(response, path, verb)["detail"]


def test_a_read_only_token_cannot_ask_for_a_statement(
    client: FlaskClient, db: Session, bearer: Bearer
) -> None:
    body = {"start_date": "2026-01-01", "end_date": "2026-01-31"}
    response = client.post(
        "/api/portal/statements", json=body, headers=bearer(scope=TokenScope.READ)
    )
    assert response.status_code == 403
    with tenancy.system(db):
        assert db.scalar(select(func.count(Statement.id))) == 0
    assert client.post("/api/portal/statements", json=body, headers=bearer()).status_code == 202


# cursors -----------------------------------------------------------------------------------


def _cursor(values: list[Any]) -> str:
    raw = json.dumps(values).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "values",
    [
        ["2026-01-01T00:00:00", 1],  # no offset: the column holds UTC moments
        ["0001-01-01", 1],
        ["9999-12-31T23:59:59", 1],
        ["0001-01-01T00:00:00+14:00", 1],  # before year 1 once in UTC
        ["2026-01-01T00:00:00+00:00", 2**31],  # beyond an INTEGER column
        ["2026-01-01T00:00:00+00:00", -(2**70)],
        ["2026-01-01T00:00:00+00:00", 2**70],
        ["2026-01-01T00:00:00\u0000+00:00", 1],
        ["not a time", 1],
        [1, "2026-01-01T00:00:00+00:00"],
    ],
)
def test_a_made_up_statement_cursor_is_400_never_500(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, values: list[Any]
) -> None:
    response = client.get(
        "/api/portal/statements", query_string={"after": _cursor(values)}, headers=bearer()
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert spec_check(response, "/api/portal/statements")["errors"] == [
        {"field": "after", "message": "invalid"}
    ]


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("/api/portal/statements", ["2026-01-01T00:00:00+00:00"]),
        ("/api/portal/documents", ["2026-01-01T00:00:00+00:00"]),
        ("/api/portal/payment-history", ["2026-01-01T00:00:00+00:00"]),
        ("/api/portal/invoices", ["-date", "2026-01-01"]),
    ],
)
@pytest.mark.parametrize("last_id", [2**31, 2**62, -(2**31) - 1])
def test_a_cursors_row_id_beyond_an_id_column_is_400(
    client: FlaskClient,
    bearer: Bearer,
    spec_check: SpecCheck,
    path: str,
    values: list[Any],
    last_id: int,
) -> None:
    """Row ids are INTEGER columns: a larger id than one holds was a PostgreSQL error (500)."""
    after = _cursor([*values, last_id])
    response = client.get(path, query_string={"after": after}, headers=bearer())
    assert response.status_code == 400, response.get_data(as_text=True)
    assert spec_check(response, path)["errors"] == [{"field": "after", "message": "invalid"}]


# caching -----------------------------------------------------------------------------------


def test_a_login_token_and_every_portal_answer_are_never_stored_by_a_cache(
    app: Flask, client: FlaskClient, bearer: Bearer
) -> None:
    """RFC 6749 §5.1: an answer carrying a token says `Cache-Control: no-store`; so does every
    other answer of the user's data (and its problems)."""
    login = _login(app, client, "admin@acme.test")
    assert login.status_code == 200
    assert login.headers["Cache-Control"] == "no-store"
    headers = {"Authorization": f"Bearer {login.get_json()['token']}"}
    for path in ("/api/portal/profile", "/api/portal/dashboard", "/api/portal/invoices"):
        assert client.get(path, headers=headers).headers["Cache-Control"] == "no-store"
    refused = client.get("/api/portal/profile")
    assert refused.status_code == 401 and refused.headers["Cache-Control"] == "no-store"


# payment -----------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [True, "100", "1e2", 100.0])
def test_an_amount_that_is_not_a_json_integer_is_400_and_pays_nothing(
    client: FlaskClient, db: Session, bearer: Bearer, spec_check: SpecCheck, amount: Any
) -> None:
    """`true` was taken for 1 (a cent paid) and "100" for 100: minor units are integers."""
    inv = make_invoice(db, account_named(db, "Acme West"), "50.00")
    body = {
        "invoices": [{"id": inv.public_id, "amount_minor": amount}],
        "method_id": method(db, "4242").public_id,
    }
    headers = {**bearer(), "Idempotency-Key": "strict"}
    response = client.post("/api/portal/payment", json=body, headers=headers)
    assert response.status_code == 400, response.get_data(as_text=True)
    [error] = spec_check(response, "/api/portal/payment", "post")["errors"]
    assert error["field"] == "invoices.0.amount_minor"
    assert invoice(db, inv.number).balance_due == minor("50.00")


# the spec ----------------------------------------------------------------------------------


def test_every_error_answer_in_the_spec_is_a_problem(client: FlaskClient) -> None:
    """SpecTree added its own `ValidationError` (a list of loc/msg/type) as the 400 of routes
    taking no input; every 4xx/5xx the portal sends is a ProblemDetail."""
    document = client.get("/api/openapi.json").get_json()
    assert not [name for name in document["components"]["schemas"] if "ValidationError" in name]
    for path, item in document["paths"].items():
        for verb, operation in item.items():
            for status, answer in operation["responses"].items():
                if status[0] in "45":
                    [(mimetype, media)] = answer["content"].items()
                    assert mimetype == PROBLEM, (verb, path, status)
                    assert "ProblemDetail" in media["schema"]["$ref"], (verb, path, status)


@pytest.mark.parametrize("path", ["/api/portal/dashboard", "/api/portal/profile"])
def test_a_400_of_a_route_without_input_fits_the_spec(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, path: str
) -> None:
    response = client.get(path, query_string="x=%00", headers=bearer())
    assert response.status_code == 400
    assert spec_check(response, path)["status"] == 400


# what ends tokens --------------------------------------------------------------------------


def _live(client: FlaskClient, raw: str) -> bool:
    answer = client.get("/api/portal/profile", headers={"Authorization": f"Bearer {raw}"})
    assert answer.status_code in {200, 401}
    return answer.status_code == 200


def _tokens_of(app: Flask, db: Session, email: str) -> tuple[str, str]:
    login = issue_token(app, db, email, kind=TokenKind.LOGIN, lifetime=timedelta(hours=1))
    return login, issue_token(app, db, email)


def test_a_two_step_reset_ends_login_tokens_as_it_ends_sessions(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    login, personal = _tokens_of(app, db, "ap@acme.test")
    with tenancy.system(db):
        user = user_by_email(db, "ap@acme.test")
        users.reset_mfa(db, user, now=app.extensions["portal.clock"].now(), request=INFO, by="t")
    assert not _live(client, login)
    assert _live(
        client, personal
    )  # revoked one by one on /portal/security, as on a password change


def test_an_administrator_signing_a_user_out_everywhere_ends_their_login_tokens(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    login, personal = _tokens_of(app, db, "ap@acme.test")
    with tenancy.system(db):
        admin, user = user_by_email(db, "admin@acme.test"), user_by_email(db, "ap@acme.test")
        now = app.extensions["portal.clock"].now()
        users.end_sessions(db, admin, user, now=now, request=INFO)
    assert not _live(client, login)
    assert _live(client, personal)


def test_deactivating_a_user_ends_every_token_for_good(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    """Reactivated, the user starts afresh: the tokens made before do not come back to life."""
    login, personal = _tokens_of(app, db, "ap@acme.test")
    with tenancy.system(db):
        admin, user = user_by_email(db, "admin@acme.test"), user_by_email(db, "ap@acme.test")
        now = app.extensions["portal.clock"].now()
        assert users.deactivate(db, admin, user, now=now, request=INFO) is None
        assert users.reactivate(db, admin, user, now=now, request=INFO) is None
        db.flush()
    assert user.status is UserStatus.ACTIVE
    assert not _live(client, login)
    assert not _live(client, personal)
    fresh = issue_token(app, db, "ap@acme.test")
    assert _live(client, fresh)


def test_a_token_made_in_another_company_than_its_users_is_401(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    """No page moves a user between companies; should their row ever change company, a token
    made for the old one must not read the new one."""
    raw = issue_token(app, db, "ap@acme.test")
    with tenancy.system(db):
        user = user_by_email(db, "ap@acme.test")
        user.company_id = user_by_email(db, "admin@globex.test").company_id
        db.flush()
    assert not _live(client, raw)


def test_revoking_a_token_needs_the_csrf_token(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    raw = issue_token(app, db, "admin@acme.test")
    with tenancy.system(db):
        token = db.scalars(select(ApiToken)).one()
    response = client.post(f"/portal/security/tokens/{token.public_id}/revoke")
    assert response.status_code == 400
    assert _live(app.test_client(), raw)


def test_a_session_without_the_csrf_header_is_a_documented_403_on_every_unsafe_operation(
    client: FlaskClient, signed_in: Auth, spec_check: SpecCheck
) -> None:
    """POST /statements did not list 403, which the session's CSRF refusal answers."""
    for path, verb in _unsafe_operations(client):
        url = path.replace("{public_id}", "x")
        response = client.open(url, method=verb.upper(), json={}, headers={"Idempotency-Key": "k"})
        assert response.status_code == 403, (verb, path, response.get_data(as_text=True))
        assert "X-CSRFToken" in spec_check(response, path, verb)["detail"]
