"""Helpers for the JSON API's tests: a bearer token for any demo user, and a check of every
answer against the published spec (/api/openapi.json)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import TokenKind, TokenScope
from portal.services import api_tokens
from tests.conftest import user_by_email

PROBLEM = "application/problem+json"


def issue_token(
    app: Flask,
    db: Session,
    email: str = "admin@acme.test",
    *,
    scope: TokenScope = TokenScope.PAY,
    lifetime: timedelta = timedelta(days=30),
    kind: TokenKind = TokenKind.PERSONAL,
) -> str:
    now = app.extensions["portal.clock"].now()
    with tenancy.system(db):
        user = user_by_email(db, email)
        issued = api_tokens.issue(
            db, user, name="test", scope=scope, expires_at=now + lifetime, now=now, kind=kind
        )
        db.flush()
    return issued.raw


@pytest.fixture
def bearer(app: Flask, db: Session) -> Callable[..., dict[str, str]]:
    """Headers carrying a fresh token: `bearer()` for admin@acme.test, `bearer("ap@acme.test",
    scope=TokenScope.READ)` for someone else."""

    def make(email: str = "admin@acme.test", **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(app, db, email, **kwargs)}"}

    return make


class SpecCheck:
    """Validates an answer's body against the response the spec documents for its status."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def __call__(self, response: Any, path: str, method: str = "get") -> Any:
        operation = self.document["paths"][path][method]
        status = str(response.status_code)
        assert status in operation["responses"], (path, method, status, response.get_data())
        content = operation["responses"][status].get("content")
        if not content:
            return None
        mimetype = response.mimetype
        assert mimetype in content, (path, status, mimetype, list(content))
        schema = dict(content[mimetype]["schema"])
        schema["components"] = self.document["components"]
        body = response.get_json(force=True)
        jsonschema_rs.validate(schema, body)
        return body


@pytest.fixture
def spec_check(client: FlaskClient) -> SpecCheck:
    document = client.get("/api/openapi.json").get_json()
    return SpecCheck(document)
