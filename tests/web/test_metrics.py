"""/metrics in one process: the names the portal exports move where things happen, the latency
histogram is there, the backlog is read as it is asked (and left out when its source is away),
and the alert rules and dashboard ask only for names it exports."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.orm import Session

from portal import flags
from portal.config import PROJECT_ROOT
from tests.conftest import Auth, Backend, committed_postgres_app
from tests.redis_server import RedisServer
from tests.web.payment_helpers import invoice, method, pay, payment, run_jobs
from workers.queue import get_queue

pytestmark = pytest.mark.usefixtures("connection")

MONITORING = PROJECT_ROOT / "docs" / "monitoring"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(client: FlaskClient) -> Samples:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.status_code
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(answer.get_data(as_text=True))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _labels in samples}


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dev_client(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    """The test app, but /metrics open as in development (the token rules: test_health.py)."""
    monkeypatch.setitem(
        app.config, "SETTINGS", dataclasses.replace(app.config["SETTINGS"], env="development")
    )
    yield app.test_client()


def test_sign_ins_mfa_failures_and_payments_move_their_counters(
    app: Flask, client: FlaskClient, auth: Auth, db: Session, dev_client: FlaskClient
) -> None:
    before = scrape(dev_client)
    assert auth.login(password="wrong-password").status_code == 401  # refused
    assert auth.login().status_code == 302
    refused = auth.code("000000")
    assert refused.status_code == 401  # the form again, with the error
    auth.sign_in()
    inv = invoice(db, "INV-1004")
    _confirmed, pid = pay(client, [inv], method(db, "4242").public_id)
    assert pid and payment(db, pid).status.value == "succeeded"
    run_jobs(app)  # the receipt mail: a job, timed
    after = scrape(dev_client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("portal_sign_ins_total", outcome="invalid") == 1
    assert moved("portal_sign_ins_total", outcome="ok") == 2
    assert moved("portal_mfa_failures_total", outcome="invalid") == 1
    assert moved("portal_payments_total", gateway="sandbox", outcome="succeeded") == 1
    assert moved("portal_payments_total", gateway="sandbox", outcome="failed") == 0
    assert moved("portal_http_requests_total", endpoint="auth.login", method="POST", status="302")
    assert moved("portal_http_requests_total", endpoint="auth.login", method="POST", status="401")
    # The latency histogram: buckets, count and sum for the sign-in page's POST.
    login = {"endpoint": "auth.login", "method": "POST"}
    assert moved("portal_http_request_duration_seconds_count", **login) == 3
    assert moved("portal_http_request_duration_seconds_bucket", **login, le="+Inf") == 3
    assert moved("portal_http_request_duration_seconds_sum", **login) > 0
    assert (
        "portal_http_request_duration_seconds_bucket",
        frozenset({**login, "le": "0.07"}.items()),
    ) in after
    jobs = [
        key
        for key in after
        if key[0] == "portal_job_duration_seconds_count" and ("outcome", "done") in key[1]
    ]
    assert any(
        value(after, *key[:1], **dict(key[1])) > value(before, *key[:1], **dict(key[1]))
        for key in jobs
    )
    # The pool's gauges and the backlog (read at scrape time) are there.
    assert {
        "portal_db_pool_checked_out",
        "portal_db_pool_size",
        "portal_db_pool_overflow",
    } <= names(after)
    assert {
        "portal_outbox_due",
        "portal_outbox_oldest_due_age_seconds",
        "portal_work_late",
    } <= names(after)


def test_a_declined_card_counts_as_a_failed_payment(
    client: FlaskClient, signed_in: Auth, db: Session, dev_client: FlaskClient
) -> None:
    before = scrape(dev_client)
    _confirmed, pid = pay(client, [invoice(db, "INV-1004")], method(db, "0341").public_id)
    assert payment(db, pid).status.value == "failed"
    after = scrape(dev_client)
    failed = {"gateway": "sandbox", "outcome": "failed"}
    assert (
        value(after, "portal_payments_total", **failed)
        - value(before, "portal_payments_total", **failed)
        == 1
    )


def test_unmatched_paths_share_one_label(dev_client: FlaskClient) -> None:
    for path in ("/no-such-page", "/another/unknown/path", "/x?y=1"):
        assert dev_client.get(path).status_code == 404
    after = scrape(dev_client)
    endpoints = {
        dict(labels).get("endpoint")
        for name, labels in after
        if name == "portal_http_requests_total"
    }
    assert "unmatched" in endpoints
    assert not any(endpoint and "/" in endpoint for endpoint in endpoints)  # names, never paths
    assert (
        value(after, "portal_http_requests_total", endpoint="unmatched", method="GET", status="404")
        >= 3
    )


def _ask_statement(app: Flask, client: FlaskClient) -> None:
    page = client.get("/portal/statements")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    accounts = re.findall(r'name="accounts" type="checkbox" value="([^"]+)"', page.text)
    assert token and accounts
    today = app.extensions["portal.clock"].today().isoformat()
    asked = client.post(
        "/portal/statements",
        data={
            "csrf_token": token.group(1),
            "format": "csv",
            "accounts": accounts,
            "start_date": "2026-01-01",
            "end_date": today,
        },
    )
    assert asked.status_code == 303


def test_an_invoice_pdf_and_a_statement_are_timed(
    app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    dev_client: FlaskClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fresh PDF cache, so the PDF is generated here and not read from an earlier test's file.
    monkeypatch.setitem(
        app.config,
        "SETTINGS",
        dataclasses.replace(app.config["SETTINGS"], env="development", storage_dir=str(tmp_path)),
    )
    before = scrape(dev_client)
    inv = invoice(db, "INV-1004")
    pdf = client.get(f"/portal/invoices/{inv.public_id}/pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    _ask_statement(app, client)
    run_jobs(app)
    after = scrape(dev_client)
    ok_pdf = {"outcome": "ok"}
    assert (
        value(after, "portal_invoice_pdf_seconds_count", **ok_pdf)
        - value(before, "portal_invoice_pdf_seconds_count", **ok_pdf)
        == 1
    )
    csv_ok = {"format": "csv", "outcome": "ok"}
    assert (
        value(after, "portal_statement_seconds_count", **csv_ok)
        - value(before, "portal_statement_seconds_count", **csv_ok)
        == 1
    )


def test_the_backlog_is_left_out_when_its_sources_are_away(
    app: Flask,
    dev_client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    away = dataclasses.replace(
        app.config["SETTINGS"], env="development", redis_url="redis://127.0.0.1:1/0"
    )
    monkeypatch.setitem(app.config, "SETTINGS", away)

    def broken(*_args: object) -> None:
        raise RuntimeError("database away")

    monkeypatch.setattr("portal.services.outbox.backlog", broken)
    with caplog.at_level(logging.WARNING):
        answer = dev_client.get("/metrics")
    assert answer.status_code == 200
    got = names(parse(answer.get_data(as_text=True)))
    assert "portal_http_requests_total" in got
    assert not got & {"portal_outbox_due", "portal_work_late", "portal_queue_depth"}
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "metrics database" in logged and "metrics redis" in logged


def test_the_queue_depth_is_read_from_redis(
    app: Flask, dev_client: FlaskClient, monkeypatch: pytest.MonkeyPatch, own_redis: RedisServer
) -> None:
    here = dataclasses.replace(app.config["SETTINGS"], env="development", redis_url=own_redis.url)
    monkeypatch.setitem(app.config, "SETTINGS", here)
    assert value(scrape(dev_client), "portal_queue_depth") == 0
    queue = get_queue(own_redis.url)
    for n in range(3):
        queue.enqueue("workers.jobs.healthcheck", f"t{n}")
    assert value(scrape(dev_client), "portal_queue_depth") == 3
    queue.connection.close()


# The alert rules and the dashboard ----------------------------------------------------------

# Made by Prometheus itself (`up`) or by the recording rules of alerts.yml.
MADE_BY_PROMETHEUS = {"up"}


def expressions() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    found = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((MONITORING / "grafana-portal.json").read_text())
    found += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return found


def metric_names(expression: str) -> set[str]:
    """The series an expression reads: label values, label lists and functions taken out."""
    bare = re.sub(r'"[^"]*"', '""', expression)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\b(by|without)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare))
    called = set(re.findall(r"([a-zA-Z_]+)\s*\(", bare))
    return {w for w in words - called if w.startswith(("portal_", "portal:")) or w == "up"}


def test_alerts_and_dashboard_use_only_names_the_portal_exports(
    app: Flask,
    client: FlaskClient,
    auth: Auth,
    db: Session,
    dev_client: FlaskClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    own_redis: RedisServer,
) -> None:
    here = dataclasses.replace(
        app.config["SETTINGS"],
        env="development",
        redis_url=own_redis.url,
        storage_dir=str(tmp_path),
    )
    monkeypatch.setitem(app.config, "SETTINGS", here)
    auth.login(password="wrong-password")
    auth.login()
    auth.code("000000")
    auth.sign_in()
    pay(client, [invoice(db, "INV-1004")], method(db, "4242").public_id)
    assert (
        client.get(f"/portal/invoices/{invoice(db, 'INV-1005').public_id}/pdf").status_code == 200
    )
    _ask_statement(app, client)
    run_jobs(app)
    exported = names(scrape(dev_client))
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    recorded = {r["record"] for group in rules["groups"] for r in group["rules"] if "record" in r}
    used = set().union(*(metric_names(e) for e in expressions()))
    # The parser sees what it must (a check that finds nothing would pass anything).
    assert {"portal_payments_total", "portal_http_requests_total", "up"} <= used
    assert {"portal_invoice_pdf_seconds_bucket", "portal_queue_depth"} <= used
    assert used - recorded - MADE_BY_PROMETHEUS <= exported, (
        used - recorded - MADE_BY_PROMETHEUS - exported
    )
    assert recorded <= used  # every recording rule is read by an alert or a panel


def test_a_switch_at_work_is_counted_apart_from_faults(
    app: Flask, dev_client: FlaskClient, db: Session
) -> None:
    """A 503 that a rollout flag answers (the maintenance page, a part switched off) counts
    under endpoint="switched_off", which the error-rate alert leaves out (alerts_test.yml): the
    rollback is judged by "5xx under 0.1%" while the portal is off. A database away still
    counts as the fault it is, under its page."""
    from tests.web.test_flags import _refused, switch

    before = scrape(dev_client)
    switch(db, flags.STATEMENTS, False)
    assert dev_client.get("/portal/statements").status_code == 503
    switch(db, flags.MASTER, False)
    assert dev_client.get("/portal/dashboard").status_code == 503
    assert dev_client.post("/portal/payment", data={"invoice": "x"}).status_code == 503
    switch(db, flags.MASTER, True)

    def fail(_session: Session) -> dict[str, bool]:
        raise _refused()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flags, "read", fail)
        flags.cache(app).forget()
        assert dev_client.get("/portal/dashboard").status_code == 503  # "briefly unavailable"
    after = scrape(dev_client)

    def moved(**labels: str) -> float:
        name = "portal_http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(endpoint="switched_off", method="GET", status="503") == 2
    assert moved(endpoint="switched_off", method="POST", status="503") == 1
    assert moved(endpoint="statements.index", method="GET", status="503") == 0
    assert moved(endpoint="dashboard.index", method="GET", status="503") == 1  # the fault


def test_a_locked_outbox_leaves_the_backlog_out_instead_of_holding_the_scrape(
    backend: Backend,
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A migration holding the outbox (ACCESS EXCLUSIVE) or a database gone slow: the scrape
    answers within a few seconds without the backlog's lines, and says why in the log, instead
    of waiting with a web worker for as long as the lock lasts. PostgreSQL only (SQLite's
    readers never wait for a writer)."""
    if backend.name != "postgresql":
        return
    made = committed_postgres_app(tmp_path_factory, "metrics-locked")
    app = next(made)
    try:
        _scrape_while_the_outbox_is_locked(app, caplog)
    finally:
        for _ in made:  # the engine disposed, the database dropped
            pass


def _scrape_while_the_outbox_is_locked(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    app.config["SETTINGS"] = dataclasses.replace(app.config["SETTINGS"], env="development")
    engine = app.extensions["portal.db"].engine
    answers: list[tuple[int, str]] = []

    def scrape_once() -> None:
        answer = app.test_client().get("/metrics")
        answers.append((answer.status_code, answer.get_data(as_text=True)))

    with engine.connect() as holder:
        holder.execute(text("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        with caplog.at_level(logging.WARNING):
            scraper = threading.Thread(target=scrape_once, daemon=True)
            scraper.start()
            scraper.join(timeout=10)
        waited = time.monotonic() - started
        held = scraper.is_alive()
        holder.rollback()  # the lock goes: a scrape still waiting finishes now
    scraper.join(timeout=10)
    assert not held, "the scrape waited for the lock"
    assert waited < 6, waited
    status, body = answers[0]
    assert status == 200
    got = names(parse(body))
    assert "portal_db_pool_size" in got  # the rest of the answer is there
    assert "portal_outbox_due" not in got
    assert "metrics database" in " ".join(r.getMessage() for r in caplog.records)
