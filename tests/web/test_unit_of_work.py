"""One unit of work per request: the route's work commits once, at the edge (portal/web.py).

What the route answered is kept, its own refusals included; an unhandled error keeps nothing;
and a commit that fails turns the answer into the 500 page, never half of the route's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.extensions import db_session
from portal.models import AuditEvent
from tests.conftest import Auth, Backend, csrf_token, make_app, transactional, user_by_email

EMAIL = "admin@acme.test"


def _locale(app: Flask, email: str = EMAIL) -> str | None:
    """What another session on the test transaction sees: only what was committed."""
    session: Session = app.extensions["portal.db"].sessionmaker()
    try:
        return user_by_email(session, email).locale
    finally:
        session.close()


def test_a_route_that_answers_has_its_work_committed(
    app: Flask, client: FlaskClient, auth: Auth
) -> None:
    auth.sign_in(EMAIL)
    token = csrf_token(client, "/portal/dashboard")
    answer = client.post("/language", data={"csrf_token": token, "language": "de"})
    assert answer.status_code == 302
    assert _locale(app) == "de"


def test_a_refused_sign_in_is_kept_its_count_and_audit_record(
    app: Flask, client: FlaskClient, auth: Auth
) -> None:
    def failures() -> int:
        session: Session = app.extensions["portal.db"].sessionmaker()
        try:
            with tenancy.system(session):
                return (
                    session.scalar(
                        select(func.count())
                        .select_from(AuditEvent)
                        .where(AuditEvent.name == "Portal.Login")
                    )
                    or 0
                )
        finally:
            session.close()

    before = failures()
    refused = auth.login(EMAIL, "not the password")
    assert refused.status_code == 401
    assert failures() == before + 1


@pytest.fixture
def odd_app(backend: Backend) -> Iterator[Flask]:
    """An app with two routes that write and then fail, each in its own way."""
    app = make_app(backend)
    # As outside tests: an error raised after the route (the commit's) goes to the 500 handler
    # instead of up to the test.
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def _write() -> Session:
        session = db_session()
        with tenancy.system(session):
            user_by_email(session, EMAIL).locale = "es"
        return session

    def raises() -> Any:
        _write()
        raise RuntimeError("the route failed after writing")

    def commit_fails() -> Any:
        session = _write()

        def refuse(_session: Session) -> None:
            raise RuntimeError("the database refused the commit")

        event.listen(session, "before_commit", refuse, once=True)
        return "the route's own answer"

    app.add_url_rule("/_raises", view_func=raises)
    app.add_url_rule("/_commit_fails", view_func=commit_fails)
    with transactional(app):
        yield app
    app.extensions["portal.db"].engine.dispose()


@pytest.mark.parametrize("path", ["/_raises", "/_commit_fails"])
def test_an_unhandled_error_or_a_failed_commit_keeps_nothing_and_answers_500(
    odd_app: Flask, path: str
) -> None:
    before = _locale(odd_app)
    answer = odd_app.test_client().get(path)
    body = answer.get_data(as_text=True)
    assert answer.status_code == 500
    assert "Something went wrong on our side." in body
    assert "the route's own answer" not in body
    assert _locale(odd_app) == before
