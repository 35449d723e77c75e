"""Work that waits past its time is said: on the payment's page, after a reset request, and by
/readyz. Nothing runs it here until the test does (tests/work.py), as when no worker runs."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.models import PaymentStatus
from portal.runtime import REFUSED_AT
from portal.services import outbox
from tests.conftest import Auth, csrf_token
from tests.web.payment_helpers import invoice, method, pay, payment
from tests.web.test_payment_outcomes import _bank

LATE = 'id="work-late"'


def _page(client: FlaskClient, pid: str) -> str:
    return client.get(f"/portal/payments/{pid}").get_data(as_text=True)


def _ready(client: FlaskClient) -> dict[str, Any]:
    answer = client.get("/readyz")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json  # type: ignore[assignment]
    return body


def test_a_settlement_that_waits_is_said_on_the_page_and_by_readyz(
    app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = app.extensions["portal.clock"]
    _response, pid = pay(client, [invoice(db, "INV-1004")], _bank(client, db))
    assert payment(db, pid).status is PaymentStatus.PROCESSING
    assert LATE not in _page(client, pid)
    assert _ready(client)["work"] == "ok"

    clock.advance(outbox.LATE_AFTER + timedelta(seconds=5))  # its settlement should have come
    page = _page(client, pid)
    assert LATE in page and "Confirmation is taking longer than usual" in page
    fragment = client.get(
        f"/portal/payments/{pid}", headers={"HX-Request": "true", "HX-Target": "payment-panel"}
    ).get_data(as_text=True)
    assert LATE in fragment  # the polling panel says it too
    ready = _ready(client)
    assert (ready["status"], ready["work"]) == ("ready", "late")
    token = "m" * 40
    settings = dataclasses.replace(app.config["SETTINGS"], metrics_token=token)
    monkeypatch.setitem(app.config, "SETTINGS", settings)
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert "\nportal_work_late 1.0\n" in metrics.get_data(as_text=True)

    assert app.extensions["portal.jobs"].run_due() == 2  # the settlement, then its mail
    assert payment(db, pid).status is PaymentStatus.SUCCEEDED
    assert LATE not in _page(client, pid)
    assert _ready(client)["work"] == "ok"


def test_a_result_mail_that_waits_is_said_on_the_page(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    _response, pid = pay(client, [invoice(db, "INV-1003")], method(db, "4242").public_id)
    assert payment(db, pid).status is PaymentStatus.SUCCEEDED
    assert LATE not in _page(client, pid)
    app.extensions["portal.clock"].advance(outbox.LATE_AFTER + timedelta(seconds=5))
    assert "The e-mail about this payment is running late" in _page(client, pid)


def test_a_reset_asked_while_the_queue_refuses_says_the_mail_is_late(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Down:
        def enqueue(self, *_args: Any, **_kwargs: Any) -> None:
            raise ConnectionError("redis is down")

    def forgot() -> str:
        token = csrf_token(client, "/password/forgot")
        client.post("/password/forgot", data={"csrf_token": token, "email": "ap@acme.test"})
        return client.get("/login").get_data(as_text=True)

    monkeypatch.setitem(app.extensions, REFUSED_AT, None)  # undone after the test
    assert "running late" not in forgot()  # the queue took it
    monkeypatch.setitem(app.extensions, "portal.jobs", Down())
    forgot()  # refused after its answer: the next ones know
    assert "Our e-mail is running late right now" in forgot()


def test_a_scheduled_payment_whose_run_waits_past_its_time_says_so(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    clock = app.extensions["portal.clock"]
    day = clock.today() + timedelta(days=1)
    card = method(db, "4242").public_id
    _response, pid = pay(client, [invoice(db, "INV-1003")], card, scheduled_for=day.isoformat())
    assert payment(db, pid).status is PaymentStatus.SCHEDULED
    assert LATE not in _page(client, pid)  # waiting for its day is not late
    clock.advance(timedelta(days=2))
    signed_in.sign_in()  # two days on: a new session
    assert "This scheduled payment is running late" in _page(client, pid)
    assert app.extensions["portal.jobs"].run_due() == 2  # its run, then its result mail
    assert payment(db, pid).status is PaymentStatus.SUCCEEDED
    assert LATE not in _page(client, pid)
