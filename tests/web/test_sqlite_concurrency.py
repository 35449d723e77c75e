"""`make run`'s SQLite under concurrent requests: no "database is locked", ever.

These tests use database files of their own and commit for real (the shared test transaction
would serialize everything). The first two interleave two requests by hand at the point where one
used to fail; the last runs a real threaded server under a score of clients browsing, filtering,
downloading, disputing and paying, and expects no answer in the 5xx range.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.serving import make_server

from bench import load
from portal import tenancy
from portal.models import AuditEvent, Invoice
from portal.services import auth as auth_service
from portal.services import invoices as invoice_service
from tests.conftest import COOKIE, Auth, Backend, csrf_token, make_app, migrate_and_seed


def _fresh_app(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Flask]:
    folder = tmp_path_factory.mktemp(name)
    url = f"sqlite:///{folder / 'portal.db'}"
    migrate_and_seed(url, folder / "files", date.today())
    app = make_app(Backend("sqlite", url, date.today(), folder / "files"))
    yield app
    app.extensions["portal.db"].engine.dispose()


@pytest.fixture(scope="module")
def sqlite_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    yield from _fresh_app(tmp_path_factory, "sqlite-requests")


def _two_clients(app: Flask) -> tuple[FlaskClient, FlaskClient]:
    first = app.test_client()
    Auth(app, first).sign_in()
    cookie = first.get_cookie(COOKIE)
    assert cookie is not None
    second = app.test_client()
    second.set_cookie(COOKIE, cookie.value)
    return first, second


def _paused(
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    name: str,
    when: Callable[..., bool] = lambda *a, **k: True,
) -> tuple[threading.Event, threading.Event]:
    """Make `module.name` stop, in the thread that calls it first, until released."""
    reached, release = threading.Event(), threading.Event()
    original = getattr(module, name)
    owner: list[threading.Thread] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs) and not owner:
            owner.append(threading.current_thread())
            reached.set()
            assert release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return reached, release


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    return thread, result


def _invoice_id(app: Flask, number: str) -> str:
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        return session.scalars(select(Invoice.public_id).where(Invoice.number == number)).one()


def _views(app: Flask, public_id: str) -> int:
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.name == "Portal.InvoiceViewed")
        ).all()
        return sum(1 for e in events if e.properties.get("invoice_id") == public_id)


def test_an_invoice_page_records_its_view_after_a_concurrent_commit(
    sqlite_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The invoice page reads, someone commits, then the page records Portal.InvoiceViewed:
    that write used to fail at once ("database is locked") and answer 500."""
    viewer, other = _two_clients(sqlite_app)
    token = csrf_token(other, "/portal/dashboard")
    public_id = _invoice_id(sqlite_app, "INV-1004")
    before = _views(sqlite_app, public_id)
    reached, release = _paused(monkeypatch, invoice_service, "documents_for")
    thread, answers = _in_thread(lambda: viewer.get(f"/portal/invoices/{public_id}"))
    assert reached.wait(30)  # the page has read the invoice and its payments
    extended = other.post("/session/extend", data={"csrf_token": token})  # a commit meanwhile
    assert extended.status_code == 302, extended.get_data(as_text=True)
    release.set()
    thread.join(30)
    assert answers[0].status_code == 200, answers[0].get_data(as_text=True)[:500]
    assert _views(sqlite_app, public_id) == before + 1


def test_two_writing_requests_take_turns(
    sqlite_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A POST holds the write lock from its first read: a second POST waits for it (and then
    succeeds) instead of writing in between and making the first one fail."""
    first, second = _two_clients(sqlite_app)
    token = csrf_token(first, "/portal/dashboard")
    reached, release = _paused(
        monkeypatch, auth_service, "touch_session", lambda *a, force=False, **k: force
    )
    one, first_answers = _in_thread(
        lambda: first.post("/session/extend", data={"csrf_token": token})
    )
    assert reached.wait(30)  # the first has read its session and is about to write
    two, second_answers = _in_thread(
        lambda: second.post("/session/extend", data={"csrf_token": token})
    )
    two.join(0.5)
    assert two.is_alive(), "the second writer went ahead while the first held the lock"
    release.set()
    one.join(30)
    two.join(30)
    assert [a.status_code for a in first_answers + second_answers] == [302, 302], [
        a.get_data(as_text=True)[:300] for a in first_answers + second_answers
    ]


@pytest.fixture
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A threaded server on loopback over its own database (its clock is the real one: the
    load driver signs in with real TOTP codes)."""
    from portal.extensions import limiter

    for app in _fresh_app(tmp_path_factory, "sqlite-load"):
        with app.app_context():
            limiter.reset()  # other tests signed in from this address too
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_port}"
        server.shutdown()


CLIENTS, SECONDS = 20, 6


def test_a_score_of_clients_browsing_and_paying_get_no_server_error(live_url: str) -> None:
    """bench/load.py's mix, shortened (and without ZIPs, which cost CPU, not locks): a real
    threaded server on a SQLite file, every client at once."""
    tally = load.drive(live_url, clients=CLIENTS, duration=SECONDS, seed=7, zips=False)
    summary = load.report(tally, SECONDS, CLIENTS, None)
    assert summary["5xx"] == 0, summary["5xx_by_path"]
    assert summary["connection_failures"] == {}
    # It did write, all at once (every client's first round writes): views recorded, sessions
    # extended, disputes looked at, payments made.
    statuses = tally.kind_statuses
    assert statuses["invoice detail"][200] >= 1, statuses
    assert statuses["session extend"][204] >= 1, statuses
    assert statuses["payment confirm"][303] >= 1, statuses
    assert sum(statuses["dispute form"].values()) >= 1, statuses
    # A first round asks for a statement, another lists documents (bench/load.py FIRST_ROUND).
    assert statuses["statement request"][303] >= 1, statuses
    assert statuses["documents"][200] >= 1, statuses


def test_a_reset_mail_is_sent_holding_no_write_lock(
    sqlite_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the reset job talks to the mail server (which may be slow), another writer gets
    the write lock at once: a sign-in elsewhere must not wait on SMTP, and a known address must
    not stall writers that an unknown one would not."""
    import sqlite3

    from portal.services.mail import Mailer
    from workers import jobs

    path = sqlite_app.extensions["portal.db"].engine.url.database
    seen: list[str] = []

    def probe(self: Mailer, to: str, subject: str, text: str) -> str:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            seen.append(f"free:{to}")
        except sqlite3.OperationalError as error:
            seen.append(f"locked:{error}")
        finally:
            other.close()
        return "sent"

    monkeypatch.setattr(Mailer, "send", probe)
    with sqlite_app.app_context():
        answer = jobs.send_password_reset(
            "ap@acme.test", "en", {"ip_address": "", "user_agent": ""}
        )
    assert answer == "sent"
    assert seen == ["free:ap@acme.test"]
