"""A dropped database connection: a reading request runs again, at most twice, on a new session;
a write never runs twice; a database that stays away is answered "briefly unavailable" (503 with
Retry-After) on the page, the htmx fragment and the API, never the 500 page.

The losses are injected where a route calls its service (the exceptions SQLAlchemy raises for
them, built here); tests/web/test_database_restart.py restarts a real PostgreSQL under load.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from flask_login import current_user
from sqlalchemy.exc import IntegrityError, OperationalError, PendingRollbackError
from sqlalchemy.orm import Session

from portal import tenancy, web
from portal.db import CONNECT_TIMEOUT, connection_lost, make_engine
from portal.extensions import db_session
from portal.services import invoices, notifications
from tests.api.conftest import PROBLEM, issue_token
from tests.conftest import Auth, Backend, csrf_token, make_app, user_by_email
from tests.web.security_helpers import dispose

UNAVAILABLE = "The portal is briefly unavailable. Please try again soon."
WENT_WRONG = "Something went wrong on our side. Please try again."
FRAGMENT = {"HX-Request": "true", "HX-Target": "invoice-results"}


def invalidated() -> OperationalError:
    """What SQLAlchemy raises when its dialect finds the connection closed under a statement."""
    orig = psycopg.OperationalError("server closed the connection unexpectedly")
    return OperationalError("SELECT 1", {}, orig, connection_invalidated=True)


def terminated() -> OperationalError:
    """PostgreSQL's word to every backend as it stops or restarts (SQLSTATE 57P01)."""
    orig = psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    return OperationalError("SELECT 1", {}, orig)


def refused() -> OperationalError:
    """Connecting while PostgreSQL is down (no SQLSTATE: the server never answered)."""
    orig = psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        "Connection refused"
    )
    return OperationalError(None, None, orig)  # type: ignore[arg-type]


def cancelled() -> OperationalError:
    """A statement that ran too long: the connection is fine (SQLSTATE 57014)."""
    orig = psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
    return OperationalError("SELECT 1", {}, orig)


def locked() -> OperationalError:
    return OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))


def duplicate() -> IntegrityError:
    orig = psycopg.errors.UniqueViolation("duplicate key value violates unique constraint")
    return IntegrityError("INSERT", {}, orig)


@pytest.mark.parametrize("make", [invalidated, terminated, refused])
def test_a_lost_connection_is_told_apart(make: Callable[[], Exception]) -> None:
    assert connection_lost(make())


@pytest.mark.parametrize("make", [cancelled, locked, duplicate, lambda: RuntimeError("boom")])
def test_what_the_statement_asked_is_not_a_lost_connection(make: Callable[[], Exception]) -> None:
    assert not connection_lost(make())


def test_a_session_left_unusable_by_a_lost_connection_counts_as_lost() -> None:
    """A `finally` that used the session while the loss was raised (PendingRollbackError)."""
    with pytest.raises(PendingRollbackError) as raised:
        try:
            raise invalidated()
        finally:
            raise PendingRollbackError("This Session's transaction has been rolled back", None)
    assert connection_lost(raised.value)
    assert not connection_lost(PendingRollbackError("rolled back earlier", None))


def test_a_failed_flush_across_companies_raises_its_own_error(db: Session) -> None:
    """Leaving `tenancy.system` does not touch a transaction that a failed flush ended: the
    failure itself is raised (here a constraint; under load a lost connection, which a retry
    must recognise), not PendingRollbackError."""
    with pytest.raises(IntegrityError), tenancy.system(db):
        user_by_email(db, "admin@acme.test").email = None  # type: ignore[assignment]
        db.flush()
    db.rollback()
    with tenancy.system(db):
        assert user_by_email(db, "admin@acme.test").email == "admin@acme.test"


class Flaky:
    """A service that loses the connection `failures` times, then does its work; it notes what
    each attempt saw (its session, its user, what was on g)."""

    def __init__(
        self, real: Callable[..., Any], failures: int, loss: Callable[[], Exception]
    ) -> None:
        self.real = real
        self.failures = failures
        self.loss = loss
        self.seen: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(
            {
                "session": db_session(),
                "user": current_user._get_current_object(),
                "left_behind": "left_behind" in g,
            }
        )
        if len(self.seen) <= self.failures:
            g.left_behind = True
            raise self.loss()
        return self.real(*args, **kwargs)


@pytest.fixture
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "RETRY_PAUSES", (0.0, 0.0))


def retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "portal.web" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("loss", [invalidated, terminated, refused])
def test_a_read_whose_connection_dropped_is_answered_by_its_second_attempt(
    signed_in: Auth,
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    no_pauses: None,
    loss: Callable[[], Exception],
) -> None:
    flaky = Flaky(invoices.list_invoices, failures=1, loss=loss)
    monkeypatch.setattr(invoices, "list_invoices", flaky)
    with caplog.at_level(logging.WARNING):
        response = client.get("/portal/invoices?status=open")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Invoices" in response.get_data(as_text=True)
    assert len(flaky.seen) == 2
    first, second = flaky.seen
    # The second attempt started afresh: its own session and user, nothing the first left on g.
    assert second["session"] is not first["session"]
    assert second["user"] is not first["user"]
    assert second["user"].email == "admin@acme.test"
    assert not second["left_behind"]
    assert retries(caplog) == [
        f"database connection lost: GET /portal/invoices, attempt 1 of 3 "
        f"({web._describe(loss())}): trying again in 0.0 s"
    ]


def test_the_retry_waits_between_attempts(
    signed_in: Auth, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(web.time, "sleep", pauses.append)
    monkeypatch.setattr(invoices, "list_invoices", Flaky(invoices.list_invoices, 2, invalidated))
    assert client.get("/portal/invoices").status_code == 200
    assert pauses == [0.1, 0.3]


def test_the_retries_are_bounded_then_the_page_says_briefly_unavailable(
    signed_in: Auth,
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    no_pauses: None,
) -> None:
    flaky = Flaky(invoices.list_invoices, failures=99, loss=invalidated)
    monkeypatch.setattr(invoices, "list_invoices", flaky)
    with caplog.at_level(logging.WARNING):
        response = client.get("/portal/invoices")
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert len(flaky.seen) == 3  # the first attempt and two retries
    assert int(response.headers["Retry-After"]) >= 1
    assert UNAVAILABLE in body and WENT_WRONG not in body
    assert 'href="/portal/invoices?"' in body  # Retry: the same page again
    assert [m.split(" (")[0] for m in retries(caplog)] == [
        "database connection lost: GET /portal/invoices, attempt 1 of 3",
        "database connection lost: GET /portal/invoices, attempt 2 of 3",
    ]
    assert any(
        r.levelno == logging.ERROR and "database unavailable: GET /portal/invoices" in r.message
        for r in caplog.records
    )
    monkeypatch.undo()
    assert client.get("/portal/invoices").status_code == 200  # and then served as usual


def test_an_htmx_request_gets_the_message_as_a_fragment(
    signed_in: Auth, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, no_pauses: None
) -> None:
    monkeypatch.setattr(invoices, "list_invoices", Flaky(invoices.list_invoices, 99, refused))
    response = client.get("/portal/invoices", headers=FRAGMENT)
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert 'role="alert"' in body and UNAVAILABLE in body and "<html" not in body


def test_the_page_speaks_the_users_language(
    signed_in: Auth,
    client: FlaskClient,
    db: Session,
    monkeypatch: pytest.MonkeyPatch,
    no_pauses: None,
) -> None:
    with tenancy.system(db):
        user_by_email(db, "admin@acme.test").locale = "de_DE"
        db.flush()
    monkeypatch.setattr(invoices, "list_invoices", Flaky(invoices.list_invoices, 99, terminated))
    response = client.get("/portal/invoices", headers={"Accept-Language": "en"})
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert 'lang="de"' in body
    assert "Das Portal ist kurzzeitig nicht verfügbar." in body


def test_a_write_whose_connection_dropped_runs_once_and_is_answered_unavailable(
    signed_in: Auth,
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    no_pauses: None,
) -> None:
    token = csrf_token(client, "/portal/notifications/inbox")
    flaky = Flaky(notifications.mark_all_read, failures=1, loss=invalidated)
    monkeypatch.setattr(notifications, "mark_all_read", flaky)
    with caplog.at_level(logging.WARNING):
        response = client.post("/portal/notifications/inbox/read-all", data={"csrf_token": token})
    assert response.status_code == 503
    assert len(flaky.seen) == 1  # its transaction might have committed: never run twice
    assert UNAVAILABLE in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) >= 1
    assert retries(caplog) == []


@pytest.mark.parametrize("error", [cancelled, duplicate, lambda: RuntimeError("boom")])
def test_any_other_error_is_not_retried_and_gets_the_500_page(
    signed_in: Auth,
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    no_pauses: None,
    error: Callable[[], Exception],
) -> None:
    flaky = Flaky(invoices.list_invoices, failures=99, loss=error)
    monkeypatch.setattr(invoices, "list_invoices", flaky)
    with caplog.at_level(logging.WARNING):
        response = client.get("/portal/invoices")
    assert response.status_code == 500
    assert len(flaky.seen) == 1
    assert WENT_WRONG in response.get_data(as_text=True)
    assert "Retry-After" not in response.headers
    assert retries(caplog) == []


def test_the_api_retries_a_read_and_answers_503_problem_when_it_stays_lost(
    app: Flask,
    client: FlaskClient,
    db: Session,
    monkeypatch: pytest.MonkeyPatch,
    no_pauses: None,
) -> None:
    headers = {"Authorization": f"Bearer {issue_token(app, db)}"}
    once = Flaky(invoices.invoices_after, failures=1, loss=terminated)
    monkeypatch.setattr(invoices, "invoices_after", once)
    assert client.get("/api/portal/invoices", headers=headers).status_code == 200
    assert len(once.seen) == 2

    always = Flaky(invoices.invoices_after, failures=99, loss=invalidated)
    monkeypatch.setattr(invoices, "invoices_after", always)
    response = client.get("/api/portal/invoices", headers=headers)
    assert response.status_code == 503
    assert response.mimetype == PROBLEM
    assert response.json == {
        "type": "about:blank",
        "title": "Unavailable",
        "status": 503,
        "detail": UNAVAILABLE,
        "errors": [],
    }
    assert int(response.headers["Retry-After"]) >= 1
    assert len(always.seen) == 3


# A database that refuses connections (nothing listens on its port) ---------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connecting is refused


@pytest.fixture
def refusing(tmp_path: Path) -> Iterator[Flask]:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/portal"
    app = make_app(Backend("postgresql", url, date.today(), tmp_path))
    yield app
    dispose(app)


def test_while_the_database_refuses_every_answer_is_503_not_500(
    refusing: Flask, monkeypatch: pytest.MonkeyPatch, no_pauses: None
) -> None:
    client = refusing.test_client()
    with client.session_transaction() as cookie:
        cookie[web.SESSION_TOKEN_KEY] = "a signed-in session's token"
    page = client.get("/portal/dashboard", headers={"Accept-Language": "ar"})
    body = page.get_data(as_text=True)
    assert page.status_code == 503
    assert int(page.headers["Retry-After"]) >= 1
    assert 'dir="rtl"' in body
    assert "البوابة غير متاحة لفترة قصيرة. يرجى المحاولة مرة أخرى قريبًا." in body
    for language, text in [
        ("es", "El portal no está disponible por un momento. Inténtelo de nuevo en breve."),
        ("en", UNAVAILABLE),
    ]:
        answer = client.get("/portal/invoices", headers={"Accept-Language": language})
        assert answer.status_code == 503 and text in answer.get_data(as_text=True)

    api = client.get("/api/portal/dashboard", headers={"Authorization": "Bearer pt_unknown"})
    assert api.status_code == 503 and api.mimetype == PROBLEM
    assert api.json is not None and api.json["detail"] == UNAVAILABLE

    stranger = refusing.test_client()
    token = csrf_token(stranger, "/login")  # the sign-in form needs no database to be drawn
    posted = stranger.post(
        "/login",
        data={"csrf_token": token, "email": "admin@acme.test", "password": "portal-demo-2026"},
    )
    assert posted.status_code == 503
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("url", "timeout"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:1/portal", CONNECT_TIMEOUT),
        ("postgresql://postgres@127.0.0.1:1/portal?connect_timeout=2", "2"),
    ],
)
def test_connecting_to_postgresql_gives_up_in_bounded_time(
    url: str, timeout: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that drops packets would hold a request for the system's TCP timeout."""
    given: dict[str, object] = {}

    def connect(*_args: object, **kwargs: object) -> None:
        given.update(kwargs)
        raise psycopg.OperationalError("connection failed: timeout expired")

    monkeypatch.setattr(psycopg, "connect", connect)
    engine = make_engine(url)
    try:
        with pytest.raises(OperationalError) as raised:
            engine.connect()
    finally:
        engine.dispose()
    assert given["connect_timeout"] == timeout
    assert connection_lost(raised.value)


@pytest.mark.parametrize("given", ["support-42", None])
def test_a_retried_read_keeps_its_request_id_and_leaves_no_log_context_behind(
    signed_in: Auth,
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    no_pauses: None,
    given: str | None,
) -> None:
    from portal import logs

    seen: list[object] = []
    real = invoices.list_invoices
    flaky = Flaky(real, failures=2, loss=invalidated)

    def noting(*args: Any, **kwargs: Any) -> Any:
        seen.append(logs.current("request_id"))
        return flaky(*args, **kwargs)

    monkeypatch.setattr(invoices, "list_invoices", noting)
    headers = {logs.REQUEST_ID_HEADER: given} if given else {}
    with caplog.at_level(logging.WARNING):
        response = client.get("/portal/invoices", headers=headers)
    assert response.status_code == 200
    answered = response.headers[logs.REQUEST_ID_HEADER]
    # Three attempts, one request: one id in every attempt's lines and on the answer.
    assert seen == [answered] * 3
    if given:
        assert answered == given
    # Nothing of the request is left in the context once it is answered.
    assert logs.current("request_id") is None
