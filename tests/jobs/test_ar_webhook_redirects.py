"""A webhook receiver that answers a redirect: the event goes to AR_WEBHOOK_URL only. Followed,
a 302 turned the POST into a GET of another URL (the body dropped) whose 200 marked the event
delivered though nobody received it."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import ArEvent, Company
from portal.services import ar_events
from workers import jobs

SECRET = "whsec-" + "y" * 40


@pytest.fixture
def redirecting(
    app: Flask, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[list[str]]:
    seen: list[str] = []
    status = request.param

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            if self.path == "/hooks":
                self.send_response(status)
                self.send_header("Location", "/elsewhere")
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    settings = dataclasses.replace(
        app.config["SETTINGS"], ar_webhook_url=url, ar_webhook_secret=SECRET
    )
    monkeypatch.setitem(app.config, "SETTINGS", settings)
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("redirecting", [301, 302, 303, 307, 308], indirect=True)
def test_a_redirect_is_a_failed_delivery_never_followed(
    app: Flask, db: Session, redirecting: list[str]
) -> None:
    with app.app_context(), tenancy.system(db):
        company = db.scalars(select(Company).order_by(Company.id)).first()
        assert company is not None
        event = ar_events.record(db, company.id, ar_events.PAYMENT_SUCCEEDED, "pay_r", {})
        db.commit()
        event_id = event.id
    with app.app_context(), pytest.raises(ar_events.WebhookFailed):
        jobs.deliver_ar_event(event_id)
    assert redirecting == ["POST /hooks"]
    with tenancy.system(db):
        stored = db.get(ArEvent, event_id, populate_existing=True)
        assert stored is not None
        assert stored.webhook_delivered_at is None
        assert "30" in stored.webhook_last_error
