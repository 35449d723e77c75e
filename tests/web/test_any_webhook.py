"""Property-based: whatever reaches /webhooks/stripe on an app that takes Stripe's webhooks
answers 400 unless Stripe signed it, never 5xx even when signed, and a 4xx changes no data.

(test_any_input.py covers every route of the default app, whose gateway is the sandbox: there
/webhooks/stripe is not served. This app has Stripe's webhook secret, so the examples can sign
garbage the way Stripe signs events and reach the parsing behind the signature.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, select

from portal import tenancy
from portal.models import Payment
from tests.conftest import Backend, make_app, transactional
from tests.web.fuzz_helpers import FUZZ, JSON, TEXT, digest

SECRET = "whsec_portal_fuzz"


@pytest.fixture(scope="module")
def stripe_app(backend: Backend) -> Iterator[Flask]:
    app = make_app(
        backend,
        payment_gateway="stripe",
        stripe_secret_key="sk_test_portal",
        stripe_webhook_secret=SECRET,
        stripe_api_base="http://127.0.0.1:9",  # nothing here calls Stripe
    )
    yield app
    app.extensions["portal.db"].engine.dispose()


def _sign(payload: bytes, when: int) -> str:
    mac = hmac.new(SECRET.encode(), f"{when}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={when},v1={mac}"


def _events(references: list[str], payments: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(strategy, strategy, JSON)

    intent = st.fixed_dictionaries(
        {
            "object": maybe(st.just("payment_intent")),
            "id": maybe(st.one_of(st.sampled_from(references or ["pi_none"]), TEXT)),
            "status": maybe(
                st.sampled_from(["succeeded", "processing", "requires_action", "canceled"])
            ),
            "amount": maybe(st.integers(-(10**20), 10**20)),
            "currency": maybe(st.sampled_from(["usd", "eur"])),
            "metadata": maybe(st.fixed_dictionaries({"payment": maybe(st.sampled_from(payments))})),
            "last_payment_error": maybe(st.fixed_dictionaries({"code": maybe(TEXT)})),
            "next_action": maybe(
                st.fixed_dictionaries({"redirect_to_url": st.fixed_dictionaries({"url": TEXT})})
            ),
        }
    )
    return st.fixed_dictionaries(
        {
            "id": maybe(TEXT),
            "object": maybe(st.just("event")),
            "type": maybe(
                st.sampled_from(
                    [
                        "payment_intent.succeeded",
                        "payment_intent.payment_failed",
                        "payment_intent.processing",
                        "payment_intent.canceled",
                        "charge.refunded",
                    ]
                )
            ),
            "data": maybe(st.fixed_dictionaries({"object": maybe(intent)})),
        }
    )


class Run:
    """The app's transaction for the whole test; each example rolls back its own savepoint."""

    def __init__(self, app: Flask, connection: Connection) -> None:
        self.app = app
        self.connection = connection
        self.client = app.test_client()
        session = app.extensions["portal.db"].sessionmaker()
        with tenancy.system(session):
            rows = session.execute(select(Payment.gateway_reference, Payment.public_id)).all()
        session.close()
        self.references = [ref for ref, _ in rows if ref]
        self.payments = [pid for _, pid in rows]
        self.baseline = digest(connection)

    def __repr__(self) -> str:
        return "<run>"


@pytest.fixture
def run(stripe_app: Flask) -> Iterator[Run]:
    with transactional(stripe_app) as connection:
        yield Run(stripe_app, connection)


@FUZZ
@given(data=st.data())
def test_the_stripe_webhook_takes_any_body(run: Run, data: st.DataObject) -> None:
    body = data.draw(
        st.one_of(
            st.binary(max_size=300),
            JSON.map(lambda v: json.dumps(v).encode()),
            _events(run.references, run.payments).map(lambda v: json.dumps(v).encode()),
        )
    )
    signature = data.draw(st.sampled_from(["none", "garbage", "signed", "signed", "signed"]))
    headers = {"Content-Type": data.draw(st.sampled_from(["application/json", "text/plain"]))}
    if signature == "signed":
        headers["Stripe-Signature"] = _sign(body, int(time.time()))
    elif signature == "garbage":
        headers["Stripe-Signature"] = data.draw(
            st.one_of(
                st.sampled_from(["t=1e400,v1=x", f"t={'9' * 400},v1=x", "t=,v1=", "=,="]),
                st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80),
            )
        )
    savepoint = run.connection.begin_nested()
    try:
        response = run.client.post("/webhooks/stripe", data=body, headers=headers)
        status = response.status_code
        what = f"{signature} {body[:300]!r} -> {status}"
        assert status < 500, f"{what} (the log above has the traceback)"
        assert status in (200, 400), what
        if signature != "signed":
            assert status == 400, what
        if status == 400:
            assert digest(run.connection) == run.baseline, what
    finally:
        savepoint.rollback()
