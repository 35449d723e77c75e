"""Production answers to PUBLIC_URL's host name only, and a refused Host gets the 400 page
(never a bare 500); links in mail never come from a request header."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from portal import flags
from portal.extensions import Database
from tests.conftest import Backend, Inbox, smtp_server
from tests.web.security_helpers import PUBLIC_URL, app_as, dispose, shared_transaction
from tests.web.test_flags import switch

EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def production(backend: Backend) -> Iterator[Flask]:
    app = app_as(backend, "production")
    yield app
    dispose(app)


@pytest.fixture
def prod_client(production: Flask) -> Iterator[FlaskClient]:
    with shared_transaction(production):
        yield production.test_client()


def test_production_trusts_only_the_public_host(production: Flask) -> None:
    assert production.config["TRUSTED_HOSTS"] == ["billing.example.com"]


@pytest.mark.parametrize("path", ["/login", "/portal/dashboard", "/password/forgot", "/nowhere"])
def test_an_untrusted_host_gets_the_400_page(
    production: Flask, prod_client: FlaskClient, path: str
) -> None:
    response = prod_client.get(path, base_url=EVIL)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "<h1" in page and "Invalid request" in page and "Traceback" not in page
    assert "serve the Billing Portal. Check the link you followed." in page  # its own message
    assert "evil.example" not in page  # nothing is built from the refused name
    styles = production.extensions["portal.assets"].names["css/portal.css"]
    assert f'href="/static/{styles}"' in page  # the whole layout, styles included
    assert response.headers["Content-Security-Policy"]  # and the usual headers


def test_the_400_page_gets_its_styles_whatever_the_host(
    production: Flask, prod_client: FlaskClient
) -> None:
    hashed = production.extensions["portal.assets"].names["css/portal.css"]
    for name in ("css/portal.css", hashed):
        styles = prod_client.get(f"/static/{name}", base_url=EVIL)
        assert styles.status_code == 200 and styles.mimetype == "text/css"
        styles.close()
    missing = prod_client.get("/static/nothing.css", base_url=EVIL)
    assert missing.status_code == 404


def test_an_untrusted_host_gets_a_fragment_from_htmx_and_a_400_on_post(
    prod_client: FlaskClient,
) -> None:
    fragment = prod_client.get("/login", base_url=EVIL, headers={"HX-Request": "true"})
    assert fragment.status_code == 400 and "<html" not in fragment.get_data(as_text=True)
    assert 'role="alert"' in fragment.get_data(as_text=True)
    posted = prod_client.post("/password/forgot", base_url=EVIL, data={"email": "a@b.test"})
    assert posted.status_code == 400 and "Invalid request" in posted.get_data(as_text=True)


def test_the_public_host_is_served(prod_client: FlaskClient) -> None:
    response = prod_client.get("/login", base_url=PUBLIC_URL)
    assert response.status_code == 200 and ">Sign in</button>" in response.get_data(as_text=True)


def test_a_reset_asked_for_from_another_host_mails_no_link_to_it(
    production: Flask, prod_client: FlaskClient, smtp_production: Inbox
) -> None:
    """The issue: `POST /password/forgot` with `Host: evil.example` mailed an evil.example link.
    Now that host is refused, and the real one's mail carries PUBLIC_URL."""
    refused = prod_client.post("/password/forgot", base_url=EVIL, data={"email": "admin@acme.test"})
    assert refused.status_code == 400
    page = prod_client.get("/password/forgot", base_url=PUBLIC_URL).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token
    asked = prod_client.post(
        "/password/forgot",
        base_url=PUBLIC_URL,
        data={"csrf_token": token.group(1), "email": "admin@acme.test"},
        headers={"X-Forwarded-Host": "evil.example", "Referer": f"{PUBLIC_URL}/password/forgot"},
    )
    assert asked.status_code == 302
    queue = production.extensions["portal.jobs"]
    assert [name for _when, name in queue.pending()] == ["send_password_reset"]
    assert queue.run_due(production.extensions["portal.clock"].now()) == 1
    [message] = smtp_production.messages
    body = message.get_payload(decode=True).decode()
    assert f"{PUBLIC_URL}/password/reset/" in body and "evil.example" not in body


@pytest.fixture
def smtp_production(production: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    with smtp_server(production, monkeypatch) as inbox:
        yield inbox


def test_an_untrusted_host_gets_the_400_page_while_the_portal_is_off(
    production: Flask, prod_client: FlaskClient
) -> None:
    """The maintenance page is built for the portal's own name: a refused Host still gets its
    400 page (it was a 500, counted as a fault), and the portal's own name the maintenance page."""
    with production.app_context():
        session = Database.get().sessionmaker()
        switch(session, flags.MASTER, False)
        session.close()
    for method in ("GET", "POST"):
        response = prod_client.open("/login", method=method, base_url=EVIL)
        page = response.get_data(as_text=True)
        assert response.status_code == 400, (method, response.status_code)
        assert "serve the Billing Portal. Check the link you followed." in page
        assert "evil.example" not in page
    own = prod_client.get("/login", base_url=PUBLIC_URL)
    assert own.status_code == 503 and own.headers["Retry-After"] == "300"
