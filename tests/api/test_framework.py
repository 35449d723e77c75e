"""The API's shared parts: the published spec, problem answers, bearer tokens and sessions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import ApiToken
from tests.api.conftest import PROBLEM, SpecCheck, issue_token
from tests.conftest import Auth, csrf_token


def test_the_spec_is_openapi_3_1_and_describes_its_security(client: FlaskClient) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    assert "/api/portal/dashboard" in document["paths"]
    assert set(document["components"]["securitySchemes"]) >= {"bearer", "session"}
    answers = document["paths"]["/api/portal/dashboard"]["get"]["responses"]
    assert PROBLEM in answers["401"]["content"]  # errors are typed as problem+json


def test_unknown_api_path_is_a_problem_not_a_page(client: FlaskClient) -> None:
    response = client.get("/api/portal/nothing-here")
    assert response.status_code == 404
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == 404 and body["title"] and body["detail"]


def test_no_credentials_is_401_with_a_challenge(client: FlaskClient, spec_check: SpecCheck) -> None:
    response = client.get("/api/portal/dashboard")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = spec_check(response, "/api/portal/dashboard")
    assert body["detail"] == "Session expired. Please log in again."


def test_bearer_token_reads_the_dashboard(
    client: FlaskClient, bearer: Callable[..., dict[str, str]], spec_check: SpecCheck
) -> None:
    response = client.get("/api/portal/dashboard", headers=bearer())
    assert response.status_code == 200, response.get_data(as_text=True)
    body = spec_check(response, "/api/portal/dashboard")
    assert body["company_wide"] is True
    assert body["balance"]["currency"] == "USD"


def test_a_restricted_users_token_sees_its_scope(
    client: FlaskClient, bearer: Callable[..., dict[str, str]]
) -> None:
    admin = client.get("/api/portal/dashboard", headers=bearer()).get_json()
    restricted = client.get("/api/portal/dashboard", headers=bearer("ap@acme.test")).get_json()
    assert restricted["company_wide"] is False
    assert set(restricted["accounts"]) < set(admin["accounts"])


def test_revoked_expired_and_made_up_tokens_are_401(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    expired = issue_token(app, db, lifetime=timedelta(seconds=1))
    app.extensions["portal.clock"].advance(timedelta(seconds=2))
    revoked = issue_token(app, db)
    with tenancy.system(db):
        token = db.scalars(select(ApiToken).order_by(ApiToken.id.desc()).limit(1)).one()
        token.revoked_at = app.extensions["portal.clock"].now()
        db.flush()
    for raw in (expired, revoked, "pt_made-up", "not-even-a-token"):
        response = client.get("/api/portal/dashboard", headers={"Authorization": f"Bearer {raw}"})
        assert response.status_code == 401, raw
        assert response.mimetype == PROBLEM
        assert "invalid_token" in response.headers["WWW-Authenticate"]


def test_the_signed_in_session_reads_too(signed_in: Auth, spec_check: SpecCheck) -> None:
    response = signed_in.client.get("/api/portal/dashboard")
    assert response.status_code == 200
    spec_check(response, "/api/portal/dashboard")


def test_a_session_post_without_the_csrf_header_is_refused(signed_in: Auth) -> None:
    response = signed_in.client.post("/api/portal/dashboard", json={})
    assert response.status_code == 405  # no such method: refused before anything else
    assert response.mimetype == PROBLEM
    assert "GET" in response.headers["Allow"]
    token = csrf_token(signed_in.client, "/portal/dashboard")
    assert token
