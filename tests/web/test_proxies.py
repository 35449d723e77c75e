"""Behind a load balancer (TRUSTED_PROXY_HOPS): the client's address is the one the proxy saw,
never one the client wrote itself; served directly (0 hops), X-Forwarded-* are ignored. The
production host check still holds on the forwarded name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from portal import tenancy
from portal.config import ConfigError, Settings
from portal.models import AuditEvent
from tests.conftest import Auth, Backend
from tests.web.security_helpers import app_as, dispose, shared_transaction

PROXY = "10.0.0.5"  # the load balancer, as the web process sees it
CLIENT = "198.51.100.7"  # the customer, as the load balancer saw them
SPOOFED = "203.0.113.66"  # what a client claims in its own X-Forwarded-For
PUBLIC = "billing.example.com"
INTERNAL = "http://10.0.0.9:8000"  # how the load balancer reaches the web process


@pytest.fixture(scope="module")
def direct(backend: Backend) -> Iterator[Flask]:
    app = app_as(backend, "production")
    yield app
    dispose(app)


@pytest.fixture(scope="module")
def proxied(backend: Backend) -> Iterator[Flask]:
    app = app_as(backend, "production", trusted_proxy_hops=1)
    yield app
    dispose(app)


class ClientAt(FlaskClient):
    """A test client whose every request goes to `base` (the address the web process is
    reached at) and says it comes from a page of the portal (Flask-WTF's strict referrer check
    over https)."""

    base = "https://billing.example.com"

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("base_url", self.base)
        return super().open(*args, **kwargs)


def client_at(app: Flask, base: str) -> ClientAt:
    client = ClientAt(app, app.response_class, use_cookies=True)
    client.base = base
    client.environ_base["HTTP_REFERER"] = f"https://{PUBLIC}/login"
    return client


def through_proxy(client: FlaskClient, forwarded_for: str, host: str = PUBLIC) -> None:
    """Every request of `client` arrives from the proxy's address, on the internal host name,
    with the headers a load balancer adds (appending its peer to X-Forwarded-For)."""
    client.environ_base.update(
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=forwarded_for,
        HTTP_X_FORWARDED_PROTO="https",
        HTTP_X_FORWARDED_HOST=host,
    )


def last_login_address(app: Flask) -> str:
    session = app.extensions["portal.db"].sessionmaker()
    try:
        with tenancy.system(session):
            query = select(AuditEvent.ip_address).where(AuditEvent.name == "Portal.Login")
            address: str = session.scalars(query.order_by(AuditEvent.id.desc()).limit(1)).one()
    finally:
        session.close()
    return address


def signed_in_from(app: Flask, client: FlaskClient) -> str:
    Auth(app, client).sign_in("admin@acme.test")
    return last_login_address(app)


def test_hops_are_read_from_the_environment_and_bounded() -> None:
    base = {"PORTAL_ENV": "testing"}
    assert Settings.from_env(base).trusted_proxy_hops == 0
    assert Settings.from_env({**base, "TRUSTED_PROXY_HOPS": "2"}).trusted_proxy_hops == 2
    for bad in ("-1", "6", "one"):
        with pytest.raises(ConfigError, match="TRUSTED_PROXY_HOPS"):
            Settings.from_env({**base, "TRUSTED_PROXY_HOPS": bad})


def test_served_directly_a_forwarded_address_is_ignored(direct: Flask) -> None:
    with shared_transaction(direct):
        client = client_at(direct, f"https://{PUBLIC}")
        client.environ_base.update(REMOTE_ADDR=CLIENT, HTTP_X_FORWARDED_FOR=SPOOFED)
        assert signed_in_from(direct, client) == CLIENT


def test_behind_one_proxy_the_client_address_is_the_one_it_appended(proxied: Flask) -> None:
    with shared_transaction(proxied):
        client = client_at(proxied, INTERNAL)
        # The client sent its own X-Forwarded-For; the proxy appended the address it saw.
        through_proxy(client, f"{SPOOFED}, {CLIENT}")
        assert signed_in_from(proxied, client) == CLIENT


def test_behind_one_proxy_the_forwarded_public_host_is_served(proxied: Flask) -> None:
    """The proxy reaches the web process by an internal name; the host checked is the one the
    customer asked for (X-Forwarded-Host), the portal's own."""
    with shared_transaction(proxied):
        client = client_at(proxied, INTERNAL)
        through_proxy(client, CLIENT)
        assert client.get("/login").status_code == 200


def test_behind_one_proxy_another_forwarded_host_still_gets_the_400_page(proxied: Flask) -> None:
    with shared_transaction(proxied):
        client = client_at(proxied, INTERNAL)
        through_proxy(client, CLIENT, host="evil.example")
        refused = client.get("/login")
        assert refused.status_code == 400
        assert "evil.example" not in refused.get_data(as_text=True)


def test_served_directly_the_internal_host_name_is_refused(direct: Flask) -> None:
    """Without hops a proxy's X-Forwarded-Host is not believed: the request's own Host is
    checked (a misconfigured deployment is refused, not served on a name it cannot trust)."""
    with shared_transaction(direct):
        client = client_at(direct, INTERNAL)
        through_proxy(client, CLIENT)
        assert client.get("/login").status_code == 400
