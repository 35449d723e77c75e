"""Schemathesis against the published spec (/api/openapi.json), through the WSGI app itself.

Every operation in the spec is a test of its own: the operations are read from the spec when
the tests are collected (an app is built for that, no database), so endpoints added later are
covered without touching this file; a test checks the live spec lists exactly those. Each
operation runs signed in as each demo role (bearer tokens of admin@acme.test, a customer.admin,
and ap@acme.test, a customer restricted to some billing accounts); `/api/ar/` operations run
with an operator key. Examples are few and derandomized (the same cases on every run: CI stays
stable). The checks: no 5xx, the status is documented, the media type is the documented one,
the body fits the documented schema.

Nothing is excluded: `POST /api/portal/login` runs too (its invented addresses and codes count
failures and lockouts only inside the test's transaction, rolled back afterwards), and a 429
from a rate limit is a documented answer like any other.
"""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session

from portal import create_app
from portal.api import openapi_document
from portal.services import api_tokens
from tests.api.conftest import issue_token
from tests.conftest import TEST_SECRET

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ROLES = ["admin@acme.test", "ap@acme.test"]  # customer.admin, customer (restricted)
EXAMPLES = 10  # per operation and role: keep the whole file well under a minute per backend


def _published_operations() -> list[tuple[str, str]]:
    """(path, method) of every operation the spec describes, read at collection time."""
    storage = tempfile.mkdtemp(prefix="spec-")
    app = create_app(
        {
            "env": "testing",
            "secret_key": TEST_SECRET,
            "database_url": f"sqlite:///{storage}/unused.db",  # never connected to
            "storage_dir": storage,
            "mail_dir": storage,
        }
    )
    with app.test_request_context():
        document = openapi_document()
    return sorted((path, method) for path, item in document["paths"].items() for method in item)


OPERATIONS = _published_operations()


def test_the_live_spec_has_exactly_the_operations_tested(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").get_json()
    live = sorted((path, method) for path, item in document["paths"].items() for method in item)
    assert live == OPERATIONS
    assert ("/api/portal/login", "post") in OPERATIONS


@pytest.fixture
def credentials(app: Flask, db: Session) -> dict[str, dict[str, str]]:
    """Headers per caller: a bearer token of each demo role, and an operator key."""
    now = app.extensions["portal.clock"].now()
    made = {email: {"Authorization": f"Bearer {issue_token(app, db, email)}"} for email in ROLES}
    _key, raw = api_tokens.create_key(db, name="schemathesis", now=now)
    db.flush()
    made["operator"] = {"Authorization": f"Bearer {raw}"}
    return made


@pytest.mark.parametrize(
    ("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS]
)
def test_every_operation_keeps_to_the_spec(
    app: Flask,
    client: FlaskClient,
    credentials: dict[str, dict[str, str]],
    path: str,
    method: str,
) -> None:
    schema = schemathesis.openapi.from_dict(client.get("/api/openapi.json").get_json())
    operation = schema[path][method.upper()]
    callers = ["operator"] if path.startswith("/api/ar/") else ROLES

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        for caller in callers:
            case.call_and_validate(app=app, headers=credentials[caller], checks=CHECKS)

    run()
