"""Personal API tokens on /portal/security (shown once, stored hashed, revoked there) and what
ends tokens: revocation, expiry, password changes, signing out everywhere; rate limits."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from portal import tenancy
from portal.blueprints.api_portal.account import CALLER_LIMIT
from portal.models import ApiToken, AuditEvent, TokenKind, TokenScope, UserStatus
from portal.services import api_tokens, seed
from tests.api.conftest import PROBLEM, SpecCheck, issue_token
from tests.conftest import Auth, QueryCounter, csrf_token, readable, totp_code, user_by_email

Bearer = Callable[..., dict[str, str]]
HTMX = {"HX-Request": "true", "HX-Target": "api-tokens"}


def _create(client: FlaskClient, *, htmx: bool = False, **fields: str) -> tuple[int, str]:
    token = csrf_token(client, "/portal/security")
    data = {
        "csrf_token": token,
        "tk-name": "Nightly export",
        "tk-scope": "read",
        "tk-expires_in": "30",
    }
    data.update({f"tk-{k}": v for k, v in fields.items()})
    response = client.post("/portal/security/tokens", data=data, headers=HTMX if htmx else {})
    return response.status_code, response.get_data(as_text=True)


def _raw(page: str) -> str:
    found = re.search(r'id="new-api-token"[^>]*value="(pt_[^"]+)"', page)
    assert found, page
    return found.group(1)


def _auth(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def _tokens(db: Session) -> list[ApiToken]:
    with tenancy.system(db):
        return list(db.scalars(select(ApiToken).order_by(ApiToken.id)))


def test_a_token_is_shown_once_and_stored_hashed(
    client: FlaskClient, signed_in: Auth, db: Session, spec_check: SpecCheck
) -> None:
    status, page = _create(client, scope="read+pay", expires_in="90")
    assert status == 201
    raw = _raw(page)
    assert "won't be shown again" in readable(page)
    (token,) = _tokens(db)
    assert token.kind is TokenKind.PERSONAL and token.scope is TokenScope.PAY
    assert token.expires_at - token.created_at == timedelta(days=90)
    assert raw not in token.token_hash and token.token_hash == api_tokens._digest(raw)
    # the database holds no raw token anywhere in the row
    with tenancy.system(db):
        row = db.execute(text("SELECT * FROM api_tokens")).one()
    assert all(raw not in str(value) for value in row)
    # listed afterwards with its prefix, never again in full
    again = client.get("/portal/security").get_data(as_text=True)
    assert raw not in again and token.prefix in again and "Nightly export" in again
    assert "Read and pay" in readable(again) and "Never" in readable(again)
    answer = client.get("/api/portal/profile", headers=_auth(raw))
    spec_check(answer, "/api/portal/profile")
    assert "Never" not in readable(client.get("/portal/security").get_data(as_text=True))
    (event,) = _events(db, "Portal.ApiTokenCreated")
    assert event.properties["token_id"] == token.public_id and raw not in str(event.properties)


def _events(db: Session, name: str) -> list[AuditEvent]:
    with tenancy.system(db):
        return list(db.scalars(select(AuditEvent).where(AuditEvent.name == name)))


def test_htmx_gets_the_section_only(client: FlaskClient, signed_in: Auth) -> None:
    status, fragment = _create(client, htmx=True)
    assert status == 201
    assert fragment.lstrip().startswith("{#") is False and 'id="api-tokens"' in fragment
    assert "<html" not in fragment and _raw(fragment)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "  "}, "Name the token"),
        ({"name": "x" * 101}, "at most 100 characters"),
        ({"scope": "admin"}, "Not a valid choice"),
        ({"expires_in": "7"}, "Choose how long the token lives."),
        ({"expires_in": "forever"}, "Choose how long the token lives."),
    ],
)
def test_bad_token_forms_are_refused_with_the_fields_words(
    client: FlaskClient, signed_in: Auth, db: Session, fields: dict[str, str], message: str
) -> None:
    status, page = _create(client, **fields)
    assert status == 422
    assert message in readable(page)
    assert _tokens(db) == []


def test_creating_needs_the_csrf_token(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    response = client.post("/portal/security/tokens", data={"tk-name": "x", "tk-scope": "read"})
    assert response.status_code == 400
    assert _tokens(db) == []


def test_revoking_ends_the_token_at_once(
    client: FlaskClient, signed_in: Auth, db: Session, spec_check: SpecCheck
) -> None:
    raw = _raw(_create(client)[1])
    (token,) = _tokens(db)
    assert client.get("/api/portal/profile", headers=_auth(raw)).status_code == 200
    csrf = csrf_token(client, "/portal/security")
    revoked = client.post(
        f"/portal/security/tokens/{token.public_id}/revoke", data={"csrf_token": csrf}
    )
    assert revoked.status_code == 303
    answer = client.get("/api/portal/profile", headers=_auth(raw))
    assert answer.status_code == 401 and answer.mimetype == PROBLEM
    assert "invalid, expired or revoked" in spec_check(answer, "/api/portal/profile")["detail"]
    page = client.get("/portal/security").get_data(as_text=True)
    assert "was revoked" in readable(page) and "Nightly export" not in page.split("api-tokens")[1]
    assert len(_events(db, "Portal.ApiTokenRevoked")) == 1
    # again: already gone, like a missing one
    again = client.post(
        f"/portal/security/tokens/{token.public_id}/revoke", data={"csrf_token": csrf}
    )
    assert again.status_code == 404


def test_revoking_with_htmx_answers_the_section(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    _create(client)
    (token,) = _tokens(db)
    csrf = csrf_token(client, "/portal/security")
    response = client.post(
        f"/portal/security/tokens/{token.public_id}/revoke", data={"csrf_token": csrf}, headers=HTMX
    )
    assert response.status_code == 200
    fragment = response.get_data(as_text=True)
    assert "<html" not in fragment and "was revoked" in readable(fragment)


def test_someone_elses_token_cannot_be_revoked(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    raw = issue_token(app, db, "ap@acme.test")
    with tenancy.system(db):
        other = db.scalars(select(ApiToken)).one()
    csrf = csrf_token(client, "/portal/security")
    response = client.post(
        f"/portal/security/tokens/{other.public_id}/revoke", data={"csrf_token": csrf}
    )
    assert response.status_code == 404
    assert app.test_client().get("/api/portal/profile", headers=_auth(raw)).status_code == 200
    # Signed in as one user, a token of another: refused, not mixed
    mixed = client.get("/api/portal/profile", headers=_auth(raw))
    assert mixed.status_code == 401 and "another user" in mixed.get_json()["detail"]


def test_login_tokens_are_not_listed(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    issue_token(app, db, kind=TokenKind.LOGIN)
    page = client.get("/portal/security").get_data(as_text=True)
    assert "You have no API tokens." in readable(page)


def test_an_expired_token_is_401_and_marked_on_the_page(
    app: Flask, client: FlaskClient, signed_in: Auth, spec_check: SpecCheck
) -> None:
    raw = _raw(_create(client)[1])
    app.extensions["portal.clock"].advance(timedelta(days=30, seconds=1))
    answer = client.get("/api/portal/notifications", headers=_auth(raw))
    assert answer.status_code == 401
    spec_check(answer, "/api/portal/notifications")
    signed_in.sign_in()  # the session itself timed out meanwhile
    assert "Expired" in readable(client.get("/portal/security").get_data(as_text=True))


def test_the_token_list_reads_a_bounded_number_of_rows(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, count_queries: QueryCounter
) -> None:
    def queries() -> int:
        before = count_queries.count
        assert client.get("/portal/security").status_code == 200
        return count_queries.count - before

    issue_token(app, db)
    few = queries()
    for _n in range(15):
        issue_token(app, db)
    assert queries() == few
    assert few <= 12, count_queries.statements[-few:]


# what else ends tokens ----------------------------------------------------------------------


def _login_token(app: Flask, client: FlaskClient) -> str:
    app.extensions["portal.clock"].advance(timedelta(seconds=30))
    body = {"email": "admin@acme.test", "password": seed.DEMO_PASSWORD, "code": totp_code(app)}
    answer = client.post("/api/portal/login", json=body)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    token: str = answer.get_json()["token"]
    return token


def test_a_password_change_ends_login_tokens_but_keeps_personal_ones(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    api_client = app.test_client()
    login = _login_token(app, api_client)
    personal = issue_token(app, db)
    csrf = csrf_token(client, "/portal/security")
    changed = client.post(
        "/portal/security/password",
        data={
            "csrf_token": csrf,
            "pw-current_password": seed.DEMO_PASSWORD,
            "pw-new_password": "a-brand-new-passphrase-42",
            "pw-confirm_password": "a-brand-new-passphrase-42",
        },
    )
    assert changed.status_code == 302, changed.get_data(as_text=True)
    assert api_client.get("/api/portal/profile", headers=_auth(login)).status_code == 401
    assert api_client.get("/api/portal/profile", headers=_auth(personal)).status_code == 200


def test_signing_out_everywhere_else_ends_login_tokens(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    api_client = app.test_client()
    login = _login_token(app, api_client)
    personal = issue_token(app, db)
    csrf = csrf_token(client, "/portal/security")
    assert (
        client.post("/portal/security/sessions/end-others", data={"csrf_token": csrf}).status_code
        == 302
    )
    assert api_client.get("/api/portal/profile", headers=_auth(login)).status_code == 401
    assert api_client.get("/api/portal/profile", headers=_auth(personal)).status_code == 200


def test_a_deactivated_users_tokens_are_401(app: Flask, client: FlaskClient, db: Session) -> None:
    raw = issue_token(app, db, "ap@acme.test")
    with tenancy.system(db):
        user_by_email(db, "ap@acme.test").status = UserStatus.DISABLED
        db.flush()
    assert client.get("/api/portal/profile", headers=_auth(raw)).status_code == 401


# rate limits --------------------------------------------------------------------------------


def test_each_token_has_its_own_allowance(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck
) -> None:
    allowed = int(CALLER_LIMIT.split()[0])
    headers = bearer(scope=TokenScope.READ)
    for _n in range(allowed):
        assert client.get("/api/portal/notifications", headers=headers).status_code == 200
    refused = client.get("/api/portal/profile", headers=headers)  # shared across endpoints
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "Too many attempts" in spec_check(refused, "/api/portal/profile")["detail"]
    assert client.get("/api/portal/profile", headers=bearer()).status_code == 200  # another token
