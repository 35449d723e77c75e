"""Signed webhooks of the receivables feed: a real HTTP server on a free port receives each
event, checks its signature, and fails once; the outbox retries it with its backoff and it is
delivered once, whatever runs it how often. The URL is a setting, never a request's."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.config import ConfigError, Settings
from portal.models import ArEvent, Company, Work
from portal.runtime import DELIVER_AR_EVENT
from portal.services import ar_events, outbox
from workers import jobs

SECRET = "whsec-" + "x" * 40


class Receiver:
    def __init__(self) -> None:
        self.answers: list[int] = []  # statuses to answer, in turn (then 200)
        self.got: list[tuple[dict[str, str], bytes]] = []


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.got.append((dict(self.headers.items()), body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/hooks"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def configured(
    app: Flask, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> Receiver:
    state, url = receiver
    settings = dataclasses.replace(
        app.config["SETTINGS"], ar_webhook_url=url, ar_webhook_secret=SECRET
    )
    monkeypatch.setitem(app.config, "SETTINGS", settings)
    return state


def _record(app: Flask, db: Session) -> int:
    with app.app_context(), tenancy.system(db):
        company = db.scalars(select(Company).order_by(Company.id)).first()
        assert company is not None
        event = ar_events.record(
            db, company.id, ar_events.PAYMENT_SUCCEEDED, "pay_x", {"amount": {"amount_minor": 5}}
        )
        db.commit()  # the delivery is handed off in this same transaction
        return event.id


def _event(db: Session, event_id: int) -> ArEvent:
    with tenancy.system(db):
        event = db.get(ArEvent, event_id, populate_existing=True)
    assert event is not None
    return event


def test_an_event_is_signed_retried_with_backoff_and_delivered_once(
    app: Flask, db: Session, configured: Receiver
) -> None:
    configured.answers = [503]
    event_id = _record(app, db)
    work = db.scalars(select(Work).where(Work.job == DELIVER_AR_EVENT)).all()
    assert [w.args for w in work] == [[event_id]]
    queue, clock = app.extensions["portal.jobs"], app.extensions["portal.clock"]

    assert queue.run_due() == 1  # the receiver answers 503: tried again later
    event = _event(db, event_id)
    assert event.webhook_attempts == 1 and event.webhook_delivered_at is None
    assert "503" in event.webhook_last_error
    assert queue.run_due() == 0  # not before its time (outbox.RETRY_DELAYS)
    clock.advance(outbox.RETRY_DELAYS[0])
    assert queue.run_due() == 1
    event = _event(db, event_id)
    assert event.webhook_attempts == 2 and event.webhook_delivered_at is not None

    assert len(configured.got) == 2
    headers, body = configured.got[-1]
    assert headers["Portal-Event-Id"] == str(event_id)
    now = clock.now()
    assert ar_events.verify(SECRET, headers["Portal-Signature"], body, now=now)
    assert not ar_events.verify(
        SECRET, headers["Portal-Signature"], body, now=now + timedelta(minutes=10)
    )
    assert not ar_events.verify(SECRET, "t=abc,v1=00", body)
    assert not ar_events.verify("another-secret", headers["Portal-Signature"], body)
    assert not ar_events.verify(SECRET, headers["Portal-Signature"], body + b" ")
    sent = json.loads(body)
    assert sent["id"] == str(event_id) and sent["kind"] == "payment.succeeded"
    assert sent["data"] == {"amount": {"amount_minor": 5}}

    # The job run again (a second delivery of the work, a replay): nothing is sent twice.
    with app.app_context():
        assert jobs.deliver_ar_event(event_id) == "already delivered"
    assert len(configured.got) == 2


def test_an_unreachable_receiver_is_retried_until_the_outbox_gives_up(
    app: Flask, db: Session, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dataclasses.replace(
        app.config["SETTINGS"], ar_webhook_url="http://127.0.0.1:9/hooks", ar_webhook_secret=SECRET
    )
    monkeypatch.setitem(app.config, "SETTINGS", settings)
    event_id = _record(app, db)
    queue, clock = app.extensions["portal.jobs"], app.extensions["portal.clock"]
    for _ in range(outbox.MAX_ATTEMPTS):
        queue.run_due()
        clock.advance(timedelta(minutes=10))
    event = _event(db, event_id)
    assert event.webhook_attempts == outbox.MAX_ATTEMPTS
    assert event.webhook_delivered_at is None and "no answer" in event.webhook_last_error
    assert queue.run_due() == 0


def test_without_a_webhook_nothing_is_queued(app: Flask, db: Session) -> None:
    assert not app.config["SETTINGS"].ar_webhook_url
    _record(app, db)
    assert db.scalars(select(Work).where(Work.job == DELIVER_AR_EVENT)).all() == []


def test_a_rolled_back_change_sends_nothing(app: Flask, db: Session, configured: Receiver) -> None:
    with app.app_context(), tenancy.system(db):
        company = db.scalars(select(Company).order_by(Company.id)).first()
        assert company is not None
        ar_events.record(db, company.id, "x.y", "z", {})
        db.rollback()
        db.commit()
    assert db.scalars(select(Work).where(Work.job == DELIVER_AR_EVENT)).all() == []


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("ftp://ar.example.com/hooks", SECRET),
        ("https://", SECRET),
        ("https://ar.example.com/hooks", ""),
        ("https://ar.example.com/hooks", "short"),
    ],
)
def test_the_webhook_settings_are_checked(url: str, secret: str) -> None:
    with pytest.raises(ConfigError, match="AR_WEBHOOK"):
        Settings.from_env(
            {"PORTAL_ENV": "testing", "AR_WEBHOOK_URL": url, "AR_WEBHOOK_SECRET": secret}
        )


def test_production_wants_https() -> None:
    with pytest.raises(ConfigError, match="https"):
        Settings(
            env="production",
            secret_key="k" * 40,
            payment_gateway="sandbox",
            public_url="https://billing.example.com",
            redis_url="redis://127.0.0.1:6379/0",
            ar_webhook_url="http://ar.example.com/hooks",
            ar_webhook_secret=SECRET,
        ).validated()
