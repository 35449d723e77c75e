"""Logs (portal/logs.py): JSON lines with the request id, user and company, carried into the
jobs a request asked for, and never a secret, whatever is logged during a sign-in, an MFA step,
a reset, an API token's life and a payment."""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import brotli
import pyotp
import pytest
import sentry_sdk
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import logs
from portal.config import ConfigError, Settings
from portal.models import Work
from portal.services import seed
from tests.card_data import CVC_MARKERS, card_numbers_in
from tests.conftest import Inbox, csrf_token
from tests.factories import account_named, make_invoice
from tests.web.payment_helpers import method, pay, payment, run_jobs
from tests.web.test_payment_methods import fill_card, start_setup

HEX_ID = re.compile(r"[0-9a-f]{32}")
# The tests' own SMTP server (aiosmtpd) logs what it receives: the mail, not the portal's logs.
TEST_SERVERS = ("mail.log",)


class Raw(logging.Handler):
    """Every record's message and exception as logged, before any redaction (the first wall)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(TEST_SERVERS):
            return
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.texts.append(text)


class Captured:
    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.raw = Raw()

    def lines(self) -> list[dict[str, Any]]:
        every = [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]
        return [line for line in every if not line["logger"].startswith(TEST_SERVERS)]

    @property
    def text(self) -> str:
        return "\n".join(json.dumps(line) for line in self.lines())


@pytest.fixture
def captured() -> Iterator[Captured]:
    """ALL log output, from DEBUG up: through the portal's JSON handler (as production writes
    it) and, unredacted, through `Raw`."""
    capture = Captured()
    ours = logs.handler("json", capture.stream)
    root = logging.getLogger()
    level = root.level
    root.handlers.insert(0, capture.raw)  # before any filter rewrites a record
    root.addHandler(ours)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(ours)
        root.removeHandler(capture.raw)
        root.setLevel(level)


def _code(app: Flask) -> str:
    return pyotp.TOTP(seed.DEMO_TOTP_SECRET).at(app.extensions["portal.clock"].now())


def test_nothing_secret_is_logged_and_every_line_names_its_request(
    app: Flask, client: FlaskClient, db: Session, smtp: Inbox, captured: Captured
) -> None:
    secrets: list[str] = []
    clock = app.extensions["portal.clock"]
    clock.advance(timedelta(seconds=30))

    # Sign-in: a wrong password, then the right one; a wrong code, then the right one.
    wrong_password = "Wrong-Passw0rd-7731"
    login_csrf = csrf_token(client, "/login")
    secrets += [wrong_password, seed.DEMO_PASSWORD, login_csrf]
    refused = client.post(
        "/login",
        data={"csrf_token": login_csrf, "email": "admin@acme.test", "password": wrong_password},
        headers={"X-Request-ID": "sign-in-1"},
    )
    assert refused.status_code == 401 and refused.headers["X-Request-ID"] == "sign-in-1"
    first = client.post(
        "/login",
        data={"csrf_token": login_csrf, "email": "admin@acme.test", "password": seed.DEMO_PASSWORD},
    )
    assert first.headers["Location"] == "/login/mfa"
    right = _code(app)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    mfa_csrf = csrf_token(client, "/login/mfa")
    assert client.post("/login/mfa", data={"csrf_token": mfa_csrf, "code": wrong}).status_code in {
        200,
        401,
        422,
    }
    signed = client.post("/login/mfa", data={"csrf_token": mfa_csrf, "code": right})
    assert signed.status_code == 302
    secrets += [right, wrong, mfa_csrf]
    cookie = client.get_cookie("__Host-portal") or client.get_cookie("portal_session")
    assert cookie is not None
    secrets.append(cookie.value)

    # An API token: created on the security page, then used.
    security_csrf = csrf_token(client, "/portal/security")
    created = client.post(
        "/portal/security/tokens",
        data={
            "csrf_token": security_csrf,
            "tk-name": "Nightly export",
            "tk-scope": "read",
            "tk-expires_in": "30",
        },
    ).get_data(as_text=True)
    found = re.search(r'id="new-api-token"[^>]*value="(pt_[^"]+)"', created)
    assert found
    api_token = found.group(1)
    secrets += [api_token, security_csrf]
    used = client.get("/api/portal/dashboard", headers={"Authorization": f"Bearer {api_token}"})
    assert used.status_code == 200 and HEX_ID.fullmatch(used.headers["X-Request-ID"])

    # A payment with a new sandbox card (4242…), through the hosted card page.
    number, cvc = "4242 4242 4242 4242", "9731"
    assert fill_card(client, start_setup(client), number=number, cvc=cvc).status_code == 303
    inv = make_invoice(db, account_named(db, "Acme West"), "120.00")
    confirmed, paid = pay(client, [inv], method(db, "4242").public_id)
    assert paid and payment(db, paid).status.value == "succeeded"
    paying = confirmed.headers["X-Request-ID"]
    with app.app_context():
        asked_by_payment = db.scalars(select(Work).where(Work.request_id == paying)).all()
    assert asked_by_payment  # the receipt's mail, at least

    # A password reset asked for (another client: signed out), its mail sent by the job.
    other = app.test_client()
    forgot_csrf = csrf_token(other, "/password/forgot")
    asked = other.post(
        "/password/forgot",
        data={"csrf_token": forgot_csrf, "email": "ap@acme.test"},
        headers={"X-Request-ID": "reset-request-42"},
    )
    assert asked.status_code in {200, 302, 303}
    assert asked.headers["X-Request-ID"] == "reset-request-42"
    with app.app_context():
        rows = db.scalars(select(Work).where(Work.request_id == "reset-request-42")).all()
    assert [row.job.rpartition(".")[2] for row in rows] == ["send_password_reset"]
    run_jobs(app)
    body = smtp.messages[-1].get_payload(decode=True).decode()
    reset = re.search(r"/password/reset/(\S+)", body)
    assert reset
    secrets += [reset.group(1), forgot_csrf]

    lines = captured.lines()
    assert lines, "nothing was logged"
    for line in lines:
        assert "request_id" in line and {"time", "level", "logger", "message"} <= set(line)
    # The request's own line, then its job's: the same request id, the job and its work id.
    assert any(
        line["logger"] == "portal.request" and line["request_id"] == "reset-request-42"
        for line in lines
    )
    job_lines = [line for line in lines if line.get("job") == "send_password_reset"]
    assert job_lines and {line["request_id"] for line in job_lines} == {"reset-request-42"}
    assert {line["work_id"] for line in job_lines} == {rows[0].id}
    receipt_lines = [
        line for line in lines if line.get("work_id") in {w.id for w in asked_by_payment}
    ]
    assert receipt_lines and {line["request_id"] for line in receipt_lines} == {paying}
    # A signed-in request's line names the user and company by id, never by address.
    dashboard = [line for line in lines if line.get("endpoint") == "api_portal.dashboard"]
    assert dashboard and all(line["user_id"] and line["company_id"] for line in dashboard)
    assert "admin@acme.test" not in captured.text and "ap@acme.test" not in captured.text

    raw = "\n".join(captured.raw.texts)
    for text in (captured.text, raw):
        leaked = [s for s in secrets if re.search(rf"(?<![0-9A-Za-z]){re.escape(s)}", text)]
        assert leaked == []
        assert card_numbers_in(text) == [] and not CVC_MARKERS.search(text)
        assert f"cvc={cvc}" not in text and number.replace(" ", "") not in text


def test_the_request_id_is_honoured_when_sane_and_echoed_everywhere(
    client: FlaskClient, captured: Captured
) -> None:
    for sane in ("abc-123", "Root=1-67891233-abcdef012345678912345678", "a" * 128):
        assert client.get("/login", headers={"X-Request-ID": sane}).headers["X-Request-ID"] == sane
    insane = [
        "two\nlines",
        "x" * 129,
        "a" * 1000,
        'quote"d',
        "it's",
        "",
        "spa ce",
        "tab\there",
        "<script>",
        "é",
    ]
    for bad in insane:
        answered = client.get("/login", environ_overrides={"HTTP_X_REQUEST_ID": bad})
        assert HEX_ID.fullmatch(answered.headers["X-Request-ID"]), bad
    # Errors, the API's problems and the probes carry one too; two requests, two ids.
    answers = [
        client.get("/no/such/page"),
        client.get("/api/portal/dashboard"),
        client.post("/login", data={}),
        client.get("/healthz"),
        client.get("/portal/dashboard"),
    ]
    assert [a.status_code for a in answers] == [404, 401, 400, 200, 302]
    ids = [a.headers["X-Request-ID"] for a in answers]
    assert all(HEX_ID.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)
    logged = {line["request_id"] for line in captured.lines() if line["logger"] == "portal.request"}
    assert set(ids) - {answers[3].headers["X-Request-ID"]} <= logged  # /healthz: DEBUG only
    assert not any("\n" in (line["request_id"] or "") for line in captured.lines())


def test_an_unhandled_error_is_logged_with_its_request_and_traceback(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, captured: Captured
) -> None:
    from portal.blueprints.auth import routes

    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("password=hunter2 went wrong")

    monkeypatch.setattr(routes, "render", boom)
    answered = client.get("/login", headers={"X-Request-ID": "boom-1"})
    assert answered.status_code == 500 and answered.headers["X-Request-ID"] == "boom-1"
    [error] = [line for line in captured.lines() if line["level"] == "ERROR"]
    assert error["request_id"] == "boom-1" and error["path"] == "/login"
    assert error["endpoint"] == "auth.login" and "RuntimeError" in error["exception"]
    assert "hunter2" not in captured.text  # the second wall: redacted from the traceback


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("token pt_Q2hhbmdlTWVQbGVhc2VfdGhpc19pc19hX3Rva2Vu given", "pt_Q2hh"),
        ("key ark_Q2hhbmdlTWVQbGVhc2VfdGhpc19pc19hX2tleQ given", "ark_Q2hh"),
        ("Authorization: Bearer abcdefghijklmnop1234", "abcdefghijklmnop1234"),
        ("cookie eyJzaWQiOiJhYmMifQ.Z0x1bQ.t0Ck-ZyIJMQ3RqD5rEq8Lvy4y3Q set", "eyJzaWQiOiJh"),
        ("csrf IjQ2ZDE0NjY4ZDU5NmQ1ZjMi.Z0x1bQ.aGVsbG8td29ybGQtaGVsbG8 bad", "IjQ2ZDE0Njy"),
        ("password=hunter2&email=x", "hunter2"),
        ('{"password": "hunter2"}', "hunter2"),
        ("code: 123456", "123456"),
        ("cvc=9731", "9731"),
        ("card 4242 4242 4242 4242 typed", "4242 4242 4242 4242"),
        ("card 4000-0000-0000-0002 typed", "4000-0000-0000-0002"),
        ("GET /password/reset/InRva2VuIg.abc.def HTTP/1.1", "InRva2VuIg"),
        ("GET /invitations/abcDEF123 HTTP/1.1", "abcDEF123"),
        ("GET /portal/download/abcDEF123?x=1", "abcDEF123"),
        ("GET /portal/profile/email/abcDEF123", "abcDEF123"),
        ("POST /unsubscribe/abcDEF123", "abcDEF123"),
        ("redis://:s3cretpass@127.0.0.1:6379/0", "s3cretpass"),
    ],
)
def test_the_second_wall_redacts_what_looks_like_a_secret(text: str, secret: str) -> None:
    assert secret not in logs.redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "work 42 (workers.jobs.send_payment_result) done on attempt 1: sent",
        "GET /portal/invoices/inv_8fJ2kLmN3pQr 200 12.5 ms",
        "payment pay_abc123 is processing; 3 invoices, 120.00 USD",
        "2026-12-01T11:36:08.123Z",
    ],
)
def test_the_second_wall_leaves_ordinary_lines_alone(text: str) -> None:
    assert logs.redact(text) == text


def test_every_route_with_a_token_in_its_path_is_redacted(app: Flask) -> None:
    secret_rules = [
        rule
        for rule in app.url_map.iter_rules()
        if any("token" in argument for argument in rule.arguments)
    ]
    assert len(secret_rules) >= 5
    for rule in secret_rules:
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", "Zm9vYmFyYmF6", rule.rule)
        assert "Zm9vYmFyYmF6" not in logs.redact(path), rule.rule


def test_log_settings() -> None:
    def settings(**environ: str) -> Settings:
        return Settings.from_env({"PORTAL_ENV": "testing", **environ})

    assert (settings().log_format, settings().log_level) == ("json", "INFO")
    development = Settings.from_env({"PORTAL_ENV": "development", "SECRET_KEY": "k" * 40})
    assert development.log_format == "text"
    assert settings(LOG_FORMAT="TEXT", LOG_LEVEL="debug").log_format == "text"
    assert settings(LOG_LEVEL="debug").log_level == "DEBUG"
    for bad in ({"LOG_FORMAT": "xml"}, {"LOG_LEVEL": "loud"}, {"SENTRY_DSN": "not a dsn"}):
        with pytest.raises(ConfigError):
            settings(**bad)


def test_the_text_format_is_readable_and_redacted() -> None:
    stream = io.StringIO()
    handler = logs.handler("text", stream)
    log = logging.getLogger("tests.logs.text")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        with logs.context(request_id="req-9", user_id=7, company_id=3):
            log.info("signed in with password=%s", "hunter2")
    finally:
        log.removeHandler(handler)
    line = stream.getvalue()
    assert "INFO" in line and "signed in with password=[redacted]" in line
    assert "request_id=req-9 user_id=7 company_id=3" in line and "hunter2" not in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


# Sentry -----------------------------------------------------------------------------------------


class Ingest(BaseHTTPRequestHandler):
    """Sentry's ingest endpoint, on loopback: keeps every envelope it is sent."""

    envelopes: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "br":
            body = brotli.decompress(body)
        Ingest.envelopes.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def ingest() -> Iterator[str]:
    Ingest.envelopes = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://publickey@127.0.0.1:{server.server_address[1]}/1"
    finally:
        client = sentry_sdk.get_client()
        client.close()
        sentry_sdk.get_global_scope().set_client(None)
        server.shutdown()
        server.server_close()


def test_an_unhandled_error_reaches_sentry_with_its_request_id_and_no_secret(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, ingest: str
) -> None:
    from portal.blueprints.auth import routes

    assert logs.init_sentry("", "testing") is False  # no DSN: no Sentry
    assert logs.init_sentry(ingest, "testing") is True
    assert sentry_sdk.get_client().should_send_default_pii() is False

    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the page broke (password=hunter2)")

    monkeypatch.setattr(routes, "render", boom)
    client.set_cookie(
        "__Host-portal", "eyJzaWQiOiJzZWNyZXQtY29va2llIn0.Z0x1bQ.c2lnbmF0dXJlLXZhbHVlLXg"
    )
    answered = client.get(
        "/login?token=pt_U2VjcmV0VG9rZW5WYWx1ZUZvclNlbnRyeQ&next=/portal",
        headers={
            "X-Request-ID": "sentry-req-1",
            "Authorization": "Bearer pt_QmVhcmVyVG9rZW5WYWx1ZUZvclNlbnRyeQ",
            "X-CSRFToken": "IjY0ZmM0YzU3Ig.Z0x1bQ.Y3NyZi1zaWduYXR1cmUtdmFsdWU",
        },
    )
    assert answered.status_code == 500
    sentry_sdk.flush(timeout=5)
    events = [
        json.loads(item)
        for envelope in Ingest.envelopes
        for item in envelope.split(b"\n")
        if item.startswith(b"{") and b'"exception"' in item
    ]
    assert events, Ingest.envelopes
    [event] = events
    assert event["tags"]["request_id"] == "sentry-req-1"
    assert event["environment"] == "testing"
    assert "RuntimeError" in json.dumps(event["exception"])
    sent = b"\n".join(Ingest.envelopes).decode()
    for secret in (
        "hunter2",
        "U2VjcmV0VG9rZW5WYWx1ZUZvclNlbnRyeQ",
        "QmVhcmVyVG9rZW5WYWx1ZUZvclNlbnRyeQ",
        "eyJzaWQiOiJzZWNyZXQtY29va2llIn0",
        "c2lnbmF0dXJlLXZhbHVlLXg",
        "IjY0ZmM0YzU3Ig",
    ):
        assert secret not in sent, secret
