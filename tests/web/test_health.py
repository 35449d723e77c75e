"""Operators' endpoints: what they tell, and to whom. Timings stay inside outside development."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Backend
from tests.web.security_helpers import PUBLIC_URL, app_as, dispose, shared_transaction

TOKEN = "metrics-" + "t" * 40


@pytest.fixture(scope="module")
def production(backend: Backend) -> Iterator[Flask]:
    app = app_as(backend, "production", metrics_token=TOKEN)
    yield app
    dispose(app)


@pytest.fixture(scope="module")
def development(backend: Backend) -> Iterator[Flask]:
    app = app_as(backend, "development", secret_key="d" * 40)
    yield app
    dispose(app)


@pytest.fixture
def prod_client(production: Flask) -> Iterator[FlaskClient]:
    with shared_transaction(production):
        yield production.test_client()


def test_liveness_and_readiness_say_ok_and_nothing_more(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {"status": "ready", "work": "ok"}


def test_readiness_failures_go_to_the_log_not_the_answer(
    app: Flask,
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import dataclasses

    broken = dataclasses.replace(app.config["SETTINGS"], redis_url="redis://127.0.0.1:1/0")
    monkeypatch.setitem(app.config, "SETTINGS", broken)
    with caplog.at_level(logging.WARNING):
        answer = client.get("/readyz")
    # Without Redis the portal still serves (tests/web/test_redis_away.py): ready, and says so.
    assert answer.status_code == 200
    assert answer.json == {"status": "ready", "work": "ok", "redis": "unreachable"}
    assert "ConnectionError" not in answer.get_data(as_text=True)
    assert any(
        "redis" in r.getMessage() and "ConnectionError" in r.getMessage() for r in caplog.records
    )


def test_metrics_need_the_bearer_token_outside_development(prod_client: FlaskClient) -> None:
    prod_client.get("/login", base_url=PUBLIC_URL)
    get = lambda **headers: prod_client.get("/metrics", base_url=PUBLIC_URL, headers=headers)  # noqa: E731
    anonymous = get()
    assert anonymous.status_code == 401 and "portal_http" not in anonymous.get_data(as_text=True)
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer "):
        assert get(Authorization=wrong).status_code == 401, wrong
    allowed = get(Authorization=f"Bearer {TOKEN}")
    assert allowed.status_code == 200
    exposition = allowed.get_data(as_text=True)
    assert (
        'portal_http_requests_total{endpoint="auth.login",method="GET",status="200"}' in exposition
    )


def test_without_a_token_metrics_are_off_outside_development(
    client: FlaskClient, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    assert client.get("/metrics").status_code == 404  # testing, no METRICS_TOKEN
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404
    with caplog.at_level(logging.INFO):
        app = app_as(backend, "production")
    dispose(app)
    assert any("metrics are off" in r.getMessage() for r in caplog.records)


def test_development_serves_metrics_to_anyone(development: Flask) -> None:
    with shared_transaction(development):
        client = development.test_client()
        client.get("/login")
        answer = client.get("/metrics")
    assert answer.status_code == 200
    assert 'endpoint="auth.login"' in answer.get_data(as_text=True)


def test_server_timing_only_in_development(
    client: FlaskClient, prod_client: FlaskClient, development: Flask
) -> None:
    """The response's own Server-Timing told a guesser how long /password/forgot worked."""
    assert "Server-Timing" not in client.get("/password/forgot").headers  # testing
    assert "Server-Timing" not in client.post("/password/forgot", data={}).headers
    production = prod_client.get("/password/forgot", base_url=PUBLIC_URL)
    assert production.status_code == 200 and "Server-Timing" not in production.headers
    with shared_transaction(development):
        timed = development.test_client().get("/password/forgot")
    assert timed.headers["Server-Timing"].startswith("app;dur=")
