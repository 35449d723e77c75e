"""The Stripe path's tests: a local Stripe stub and the portal configured for it. Here `client`,
`auth` (so `signed_in`) and `db` are the Stripe-configured app's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from tests.conftest import Auth, Backend, make_app, transactional
from tests.stripe_stub import StripeStub
from tests.web.stripe.helpers import SECRET_KEY, WEBHOOK_SECRET


@pytest.fixture(scope="module")
def stub() -> Iterator[StripeStub]:
    with StripeStub(webhook_secret=WEBHOOK_SECRET, secret_key=SECRET_KEY) as running:
        yield running


@pytest.fixture(scope="module")
def stripe_app(backend: Backend, stub: StripeStub) -> Iterator[Flask]:
    app = make_app(
        backend,
        payment_gateway="stripe",
        stripe_secret_key=SECRET_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=stub.url,
    )
    yield app
    app.extensions["portal.db"].engine.dispose()


@pytest.fixture
def client(stripe_app: Flask) -> Iterator[FlaskClient]:
    with transactional(stripe_app):
        yield stripe_app.test_client()


@pytest.fixture
def auth(stripe_app: Flask, client: FlaskClient) -> Auth:
    """Signing in (and `signed_in`, from tests/conftest.py) on the Stripe-configured app."""
    return Auth(stripe_app, client)


@pytest.fixture
def db(stripe_app: Flask, client: FlaskClient) -> Iterator[Session]:
    session: Session = stripe_app.extensions["portal.db"].sessionmaker()
    yield session
    session.close()
