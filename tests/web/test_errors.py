"""A failure deep in a request still gets the runbook's error page, never Flask's bare one."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from flask_login import current_user
from sqlalchemy import text

from portal.extensions import db_session
from portal.models import PortalUser
from portal.services import invoices
from tests.conftest import Auth


def test_a_failed_database_write_still_gets_the_error_page(
    client: FlaskClient, auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's session is unusable after a failed statement (PostgreSQL aborts the
    transaction, SQLAlchemy wants a rollback); the error page must not need it as it was."""
    auth.sign_in()

    def broken(*_args: object, **_kwargs: object) -> None:
        session = db_session()
        session.execute(text("SELECT 1"))
        user = session.get(PortalUser, current_user.id)
        assert user is not None
        user.email = None  # type: ignore[assignment]  # NOT NULL: the flush fails
        session.flush()

    monkeypatch.setattr(invoices, "list_invoices", broken)
    response = client.get("/portal/invoices")
    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Something went wrong on our side. Please try again." in body
    assert 'class="site-nav"' in body  # the portal's own page, signed in, with its navigation
    # The next request is served as usual.
    monkeypatch.undo()
    assert client.get("/portal/invoices").status_code == 200
