"""The rollout flags really switch things off (portal/flags.py, portal/maintenance.py).

`m25_portal` off: every page is the maintenance page (503, Retry-After, no-store; htmx told to
load it whole), the API a 503 problem; health, metrics, the gateways' webhooks and the language
switcher keep answering, and whoever was signed in still is once it is back on. The sub-flags
close their pages and API routes with a sentence, never a 500 or a bare 404. A flag set by the
CLI in another process is seen here within FLAGS_REFRESH_SECONDS.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from portal import create_app, flags, migrate, tenancy
from portal.flags import FlagCache
from portal.models import DEFAULT_FLAGS, FeatureFlag, PaymentStatus
from tests.conftest import TEST_SECRET, Auth, csrf_token
from tests.web.payment_helpers import invoice, method, pay, payment
from tests.web.test_payment_outcomes import _bank, _event, _signed, _webhook

ROOT = Path(__file__).resolve().parents[2]
HEADING = "The Billing Portal is down for maintenance"
ARABIC_HEADING = "بوابة الفواتير متوقفة للصيانة"


def switch(db: Session, name: str, on: bool) -> None:
    with tenancy.system(db):
        db.merge(FeatureFlag(name=name, enabled=on))
        db.commit()


def assert_maintenance(response: object, heading: str = HEADING) -> str:
    assert response.status_code == 503  # type: ignore[attr-defined]
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["Retry-After"] == "300"
    assert headers["Cache-Control"] == "no-store"
    text: str = response.get_data(as_text=True)  # type: ignore[attr-defined]
    assert f'<h1 id="maintenance-title">{heading}</h1>' in text
    return text


# m25_portal off: the maintenance page ------------------------------------------------------


def test_every_page_is_the_maintenance_page_and_the_session_survives_it(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    assert client.get("/portal/dashboard").status_code == 200
    switch(db, flags.MASTER, False)
    for path in ("/portal/dashboard", "/portal/invoices?status=overdue", "/login", "/nowhere"):
        text = assert_maintenance(client.get(path))
        assert "Your data and your payments are safe" in text
        assert "Please try again in about 5 minutes." in text
        assert 'class="site-nav"' not in text and "Sign out" not in text  # nobody signed in
        assert 'href="/static/css/portal.' in text  # the layout's look
    # A form posted meanwhile (no CSRF token either) gets the same page, not a refusal.
    assert_maintenance(client.post("/portal/payment", data={"invoice": "x"}))
    switch(db, flags.MASTER, True)
    back = client.get("/portal/dashboard")
    assert back.status_code == 200 and "Welcome," in back.get_data(as_text=True)


def test_the_maintenance_page_speaks_arabic_right_to_left(client: FlaskClient, db: Session) -> None:
    switch(db, flags.MASTER, False)
    response = client.get("/portal/dashboard", headers={"Accept-Language": "ar"})
    text = assert_maintenance(response, ARABIC_HEADING)
    assert '<html lang="ar" dir="rtl">' in text
    assert "بياناتك ومدفوعاتك في أمان" in text


def test_the_language_switcher_still_works_while_the_portal_is_off(
    client: FlaskClient, db: Session
) -> None:
    switch(db, flags.MASTER, False)
    token = csrf_token(client, "/portal/dashboard")
    moved = client.post(
        "/language", data={"csrf_token": token, "language": "es", "next": "/portal/dashboard"}
    )
    assert moved.status_code == 302 and moved.headers["Location"] == "/portal/dashboard"
    text = assert_maintenance(
        client.get("/portal/dashboard"), "El Portal de facturación está en mantenimiento"
    )
    assert '<html lang="es" dir="ltr">' in text


def test_htmx_is_told_to_load_the_whole_maintenance_page(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    switch(db, flags.MASTER, False)
    response = client.get(
        "/portal/invoices?q=INV",
        headers={"HX-Request": "true", "HX-Target": "invoice-results"},
    )
    assert_maintenance(response)
    assert response.headers["HX-Refresh"] == "true"
    assert "HX-Refresh" not in client.get("/portal/invoices").headers  # a plain request


def test_the_retry_after_follows_the_setting(
    app: Flask, client: FlaskClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    settings = dataclasses.replace(app.config["SETTINGS"], maintenance_retry_after=60)
    monkeypatch.setitem(app.config, "SETTINGS", settings)
    switch(db, flags.MASTER, False)
    response = client.get("/login")
    assert response.status_code == 503 and response.headers["Retry-After"] == "60"
    assert "Please try again in about 1 minute." in response.get_data(as_text=True)


def test_health_metrics_and_static_files_answer_while_the_portal_is_off(
    client: FlaskClient, db: Session
) -> None:
    switch(db, flags.MASTER, False)
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"
    assert client.get("/metrics").status_code == 404  # its own answer (testing, no token)
    css = client.get("/static/css/portal.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    css.close()


def test_a_payment_on_its_way_settles_through_its_webhook_while_the_portal_is_off(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    bank = _bank(client, db)
    _response, pid = pay(client, [invoice(db, "INV-1004")], bank)
    processing = payment(db, pid)
    assert processing.status is PaymentStatus.PROCESSING and processing.gateway_reference
    switch(db, flags.MASTER, False)
    raw, signature = _signed(app, _event(processing.gateway_reference, "succeeded", "evt_off"))
    status, body = _webhook(client, raw, signature)
    assert status == 200, body
    db.expire_all()
    assert payment(db, pid).status is PaymentStatus.SUCCEEDED


# the sub-flags --------------------------------------------------------------------------------


def test_payment_off_closes_the_form_with_a_sentence_and_hides_every_pay_action(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    inv = invoice(db, "INV-1003")
    assert "Pay Now" in client.get(f"/portal/invoices/{inv.public_id}").get_data(as_text=True)
    _response, failed = pay(client, [inv], method(db, "0341").public_id)  # charges fail
    assert payment(db, failed).status is PaymentStatus.FAILED
    assert ">Retry</a>" in client.get(f"/portal/payments/{failed}").get_data(as_text=True)
    switch(db, flags.PAYMENT, False)
    assert ">Retry</a>" not in client.get(f"/portal/payments/{failed}").get_data(as_text=True)
    for page in ("/portal/dashboard", "/portal/invoices", f"/portal/invoices/{inv.public_id}"):
        text = client.get(page).get_data(as_text=True)
        assert "Pay Now" not in text and "Pay selected" not in text, page
        assert 'href="/portal/payment?' not in text, page
    closed = client.get(f"/portal/payment?invoice={inv.public_id}")
    assert closed.status_code == 503
    assert "Online payment isn&#39;t available right now." in closed.get_data(as_text=True)
    token = csrf_token(client, "/portal/dashboard")
    posted = client.post("/portal/payment", data={"csrf_token": token, "invoice": inv.public_id})
    assert posted.status_code == 503
    # What is already paid stays visible: history and receipts.
    assert client.get("/portal/payment-history").status_code == 200


def test_statements_off_hides_the_menu_and_refuses_the_page_and_its_downloads(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    from portal.services import downloads
    from portal.services.downloads import FileKind

    switch(db, flags.STATEMENTS, False)
    dashboard = client.get("/portal/dashboard").get_data(as_text=True)
    assert 'href="/portal/statements"' not in dashboard
    closed = client.get("/portal/statements")
    assert closed.status_code == 503
    assert "Statements aren&#39;t available right now." in closed.get_data(as_text=True)
    # A statement's download link (made earlier) is refused too, never the file.
    from tests.conftest import user_by_email

    with tenancy.system(db):
        user = user_by_email(db, "admin@acme.test")
    link = downloads.sign(
        FileKind.STATEMENT,
        "stmt_anything",
        user.public_id,
        keys=app.config["SETTINGS"].keyring,
        now=app.extensions["portal.clock"].now(),
    )
    refused = client.get(f"/portal/download/{link}")
    assert refused.status_code == 503
    assert "Statements aren&#39;t available right now." in refused.get_data(as_text=True)


def test_a_sub_flag_counts_as_off_while_the_portal_is_off(app: Flask, db: Session) -> None:
    switch(db, flags.MASTER, False)
    with app.app_context():
        assert flags.snapshot()[flags.PAYMENT] is True  # its own row says on
        assert not flags.enabled(flags.PAYMENT) and not flags.enabled(flags.MASTER)


# every process sees a change -----------------------------------------------------------------


def test_a_process_reads_the_flags_again_only_after_the_refresh_interval(
    app: Flask, db: Session
) -> None:
    ticks = [100.0]
    cache = FlagCache(app.extensions["portal.db"], 2.0, monotonic=lambda: ticks[0])
    with app.app_context():
        assert cache.current()[flags.MASTER] is True
        switch(db, flags.MASTER, False)
        ticks[0] += 1.9
        assert cache.current()[flags.MASTER] is True  # the snapshot is still fresh
        ticks[0] += 0.1
        assert cache.current()[flags.MASTER] is False


def test_a_flag_set_by_the_cli_in_another_process_reaches_a_running_app(
    tmp_path: Path,
) -> None:
    """Two processes on one database: the CLI's `flags set` and a running app (refreshing every
    0.5 s) that had read the flags before."""
    url = f"sqlite:///{tmp_path / 'flags.db'}"
    migrate.upgrade(url)
    running = create_app(
        {
            "env": "testing",
            "secret_key": TEST_SECRET,
            "database_url": url,
            "flags_refresh_seconds": 0.5,
            "storage_dir": str(tmp_path / "files"),
        }
    )
    client = running.test_client()
    assert client.get("/login").status_code == 200
    env = {
        **os.environ,
        "PORTAL_ENV": "testing",
        "SECRET_KEY": TEST_SECRET,
        "DATABASE_URL": url,
        "FLAGS_REFRESH_SECONDS": "0.5",
    }
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "flags", "set", "m25_portal=off"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "m25_portal is off" in done.stdout
    assert "flag m25_portal set off (was on) by" in done.stderr  # who changed what, logged
    deadline = time.monotonic() + 0.5 + 2  # the interval, and a margin for a slow machine
    while client.get("/login").status_code != 503:
        assert time.monotonic() < deadline, "the running app never saw the flag"
        time.sleep(0.05)
    listed = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "flags", "list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0 and "m25_portal=off" in listed.stdout
    running.extensions["portal.db"].engine.dispose()


def test_scheduled_payments_wait_while_payment_is_off_and_run_when_it_is_back(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    from workers import jobs

    clock = app.extensions["portal.clock"]
    inv = invoice(db, "INV-1003")
    day = clock.today() + timedelta(days=1)
    visa = method(db, "4242").public_id
    _response, pid = pay(client, [inv], visa, scheduled_for=day.isoformat())
    assert payment(db, pid).status is PaymentStatus.SCHEDULED
    clock.advance(timedelta(days=1, hours=7))  # its day, past 06:00 UTC
    switch(db, flags.PAYMENT, False)
    with app.app_context():
        made = payment(db, pid)
        assert jobs.run_scheduled_payment(made.id).startswith("waiting")
        assert jobs.run_due_payments() == 0
    db.expire_all()
    assert payment(db, pid).status is PaymentStatus.SCHEDULED  # not failed, not canceled
    switch(db, flags.PAYMENT, True)
    with app.app_context():
        assert jobs.run_due_payments() == 1
    db.expire_all()
    assert payment(db, pid).status is PaymentStatus.SUCCEEDED


def test_reminders_and_monthly_statements_wait_while_their_part_is_off(
    app: Flask, db: Session
) -> None:
    from workers import jobs

    switch(db, flags.MASTER, False)
    with app.app_context():
        assert jobs.send_reminders() == {"users": 0, "notified": 0, "failed": 0}
        assert jobs.send_monthly_statements() == {}  # statements count as off too
        assert jobs.send_card_expiry_notices() == {"users": 0, "notified": 0, "failed": 0}
    switch(db, flags.MASTER, True)
    with app.app_context():
        assert jobs.send_reminders()["users"] > 0  # the demo's active users, when it is on
        assert jobs.send_card_expiry_notices()["users"] > 0


# the flags while the database is away ------------------------------------------------------


def _refused() -> OperationalError:
    orig = psycopg.OperationalError("connection failed: Connection refused")
    return OperationalError(None, None, orig)  # type: ignore[arg-type]


def _no_table() -> ProgrammingError:
    orig = psycopg.errors.UndefinedTable('relation "feature_flags" does not exist')
    return ProgrammingError("SELECT feature_flags.name", {}, orig)


@pytest.mark.parametrize("failure", [_refused, _no_table], ids=["refused", "table-gone"])
def test_the_maintenance_page_holds_while_the_flags_cannot_be_read(
    client: FlaskClient, db: Session, monkeypatch: pytest.MonkeyPatch, failure: Any
) -> None:
    """The operator switches the portal off, then stops or restores the database: the flags
    last read still hold, so customers keep the maintenance page (not "briefly unavailable",
    nor a 500 while the restore has dropped the table), for a page, a form and the API."""
    switch(db, flags.MASTER, False)
    assert_maintenance(client.get("/portal/dashboard"))  # read once: off

    def fail(_session: Session) -> dict[str, bool]:
        raise failure()

    monkeypatch.setattr(flags, "read", fail)
    assert_maintenance(client.get("/portal/dashboard"))
    assert_maintenance(client.post("/portal/payment", data={"invoice": "x"}))
    api = client.get("/api/portal/invoices")
    assert api.status_code == 503 and api.headers["Retry-After"] == "300"
    assert "down for maintenance" in api.get_json()["detail"]


def test_a_process_that_never_read_the_flags_says_so_when_it_cannot(app: Flask) -> None:
    cache = FlagCache(app.extensions["portal.db"], 0)

    def fail(_session: Session) -> dict[str, bool]:
        raise _refused()

    with app.app_context(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(flags, "read", fail)
        with pytest.raises(OperationalError):
            cache.current()


def test_a_failed_read_is_tried_again_after_the_interval_not_per_request(
    app: Flask, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = [100.0]
    cache = FlagCache(app.extensions["portal.db"], 2.0, monotonic=lambda: ticks[0])
    calls: list[int] = []
    real = flags.read

    def fail(session: Session) -> dict[str, bool]:
        calls.append(1)
        raise _refused()

    with app.app_context():
        assert cache.current()[flags.MASTER] is True
        monkeypatch.setattr(flags, "read", fail)
        ticks[0] += 2.0
        assert cache.current()[flags.MASTER] is True  # the last read holds
        assert cache.current()[flags.MASTER] is True
        assert len(calls) == 1  # no read per request while it is away
        monkeypatch.setattr(flags, "read", real)
        switch(db, flags.MASTER, False)
        ticks[0] += 2.0
        assert cache.current()[flags.MASTER] is False  # back: read again


# the maintenance page's own link -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "link"),
    [
        ("/portal/invoices", "status=overdue", 'href="/portal/invoices?status=overdue"'),
        ("/portal/dashboard", "", 'href="/portal/dashboard"'),
        # PATH_INFO as a server hands it over (e.g. for "GET /%5Cevil.example HTTP/1.1"): a
        # browser reads "/\host" and "/<tab>/host" as "//host", another site.
        ("/\\evil.example", "", 'href="/"'),
        ("/\\evil.example/x", "a=1", 'href="/"'),
        ("/\t/evil.example", "", 'href="/"'),
        ("//evil.example/x", "", 'href="/evil.example/x"'),  # Werkzeug keeps one leading "/"
    ],
)
def test_try_again_links_only_to_this_portal(
    client: FlaskClient, db: Session, path: str, query: str, link: str
) -> None:
    switch(db, flags.MASTER, False)
    environ = {"PATH_INFO": path, "QUERY_STRING": query}
    text = assert_maintenance(client.get("/", environ_overrides=environ))
    assert f'<a class="button button-primary" {link}>' in text
    # No link leaves the portal (the footer's "next" is checked where it is read).
    assert not re.search(r'href="(//|/\\|/\t)', text)


def test_while_one_thread_reads_the_flags_the_others_do_not_wait(app: Flask) -> None:
    """Under gunicorn's threads: a read that hangs (a database dropping packets: up to the
    connect timeout) holds up only the thread making it; the others answer with the flags last
    read, at once."""
    ticks = [100.0]
    cache = FlagCache(app.extensions["portal.db"], 2.0, monotonic=lambda: ticks[0])
    reading = threading.Event()
    release = threading.Event()

    def slow(_session: Session) -> dict[str, bool]:
        reading.set()
        release.wait(10)
        return {**DEFAULT_FLAGS, flags.MASTER: False}

    with app.app_context():
        assert cache.current()[flags.MASTER] is True
    ticks[0] += 2.0
    seen: list[bool] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flags, "read", slow)
        reader = threading.Thread(target=lambda: seen.append(cache.current()[flags.MASTER]))
        reader.start()
        assert reading.wait(5)
        started = time.monotonic()
        assert cache.current()[flags.MASTER] is True  # the last ones read, not a wait
        assert time.monotonic() - started < 0.5
        release.set()
        reader.join(10)
    assert seen == [False]
    assert cache.current()[flags.MASTER] is False  # the new read holds for everyone
