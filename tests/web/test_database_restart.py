"""PostgreSQL restarted and stopped under load, the portal served as in production.

A cluster of the test's own (tests/postgres_server.py), migrated and seeded with the demo data;
the portal under gunicorn (2 sync workers, PORTAL_ENV=production, a redis-server of its own);
a few threads browse signed-in pages and their htmx fragment, read the API with bearer tokens
and post small writes, each answer recorded with when it was asked and answered. Meanwhile
PostgreSQL is restarted (`pg_ctl restart -m fast`: every connection is dropped, the server is
back within a second), then stopped for two seconds and started again. What must hold:

- before the first fault, between the faults and after each (past GRACE) every answer is the
  usual one: no 5xx at all;
- while the server is down every answer that needs it is 503 "briefly unavailable", never 500;
  a write in flight during a fault may get 503, never 500 (nothing else);
- reads asked during the restart mostly succeed: the pool's connections are checked before use
  (pre-ping) and a read that loses its connection runs again (portal/web.py);
- the portal recovers by itself: the same two workers serve the usual answers afterwards.
"""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from bench import load
from bench.redis_server import redis_server
from portal import clock, tenancy
from portal.db import make_engine
from portal.models import TokenScope
from portal.services import api_tokens
from tests.conftest import BACKENDS, TEST_SECRET, migrate_and_seed, user_by_email
from tests.postgres_server import PostgresServer, Unavailable

ROOT = Path(__file__).resolve().parents[2]
HOST = "billing.restart.test"
GRACE = 1.5  # seconds after a fault during which an answer may still be 503
STEADY = 3.0  # seconds of load before, between and after the faults
OUTAGE = 2.0  # seconds PostgreSQL stays stopped
FRAGMENT = {"HX-Request": "true", "HX-Target": "invoice-results"}


@dataclass(frozen=True)
class Ask:
    kind: str  # "page", "fragment", "api", "write"
    method: str
    path: str
    expected: int
    headers: dict[str, str] = field(default_factory=dict)
    form: dict[str, str | list[str]] | None = None


@dataclass(frozen=True)
class Answer:
    ask: Ask
    started: float
    ended: float
    status: int  # 0: no HTTP answer at all

    def within(self, start: float, end: float) -> bool:
        return self.started < end and self.ended > start

    def describe(self, zero: float) -> str:
        return (
            f"{self.ask.method} {self.ask.path} -> {self.status} "
            f"({self.started - zero:.2f}-{self.ended - zero:.2f} s)"
        )


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    if "postgresql" not in BACKENDS:
        pytest.skip("PORTAL_TEST_BACKENDS leaves PostgreSQL out")
    try:
        server = PostgresServer()
    except Unavailable as missing:
        pytest.skip(str(missing))
    try:
        server.create()
        server.start()
        yield server
    finally:
        server.remove()


def _tokens(url: str, count: int) -> list[str]:
    """Bearer tokens of admin@acme.test (one per API caller: each has its own rate limit)."""
    engine = make_engine(url)
    now = clock.now()
    try:
        with Session(engine) as session, tenancy.system(session):
            user = user_by_email(session, "admin@acme.test")
            raw = [
                api_tokens.issue(
                    session,
                    user,
                    name=f"load {n}",
                    scope=TokenScope.READ,
                    expires_at=now + timedelta(days=1),
                    now=now,
                ).raw
                for n in range(count)
            ]
            session.commit()
    finally:
        engine.dispose()
    return raw


@dataclass
class Gunicorn:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def workers(self) -> set[int]:
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return {int(child) for child in children}


@contextmanager
def _serve(url: str, folder: Path, redis_url: str) -> Iterator[Gunicorn]:
    port = load.free_port()
    env = {
        **os.environ,
        "PORTAL_ENV": "production",
        "SECRET_KEY": TEST_SECRET,  # the demo's TOTP secrets were sealed with it
        "PUBLIC_URL": f"https://{HOST}",
        "PAYMENT_GATEWAY": "sandbox",
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "PORTAL_STORAGE_DIR": str(folder / "files"),
        "PORTAL_MAIL_DIR": str(folder / "mail"),
    }
    for name in ("METRICS_TOKEN", "SECRET_KEY_FALLBACKS"):
        env.pop(name, None)
    log = folder / "gunicorn.log"
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        *("--workers", "2", "--bind", f"127.0.0.1:{port}", "--no-control-socket"),
        *("--max-requests", "0", "--log-level", "info", "wsgi:app"),
    ]
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if load.Client(base, host=HOST).request("GET", "/readyz").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Gunicorn(process, base, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _asks(client: load.Client, tokens: list[str]) -> tuple[list[Ask], list[Ask], list[Ask]]:
    """What the browsing, API and writing threads ask, in turn."""
    listing = client.request("GET", "/portal/invoices?status=open")
    assert listing.status == 200, listing.text
    invoice = load.INVOICE_LINK.search(listing.text)
    csrf = load.CSRF.search(listing.text)
    assert invoice and csrf
    pages = [
        Ask("page", "GET", "/portal/dashboard", 200),
        Ask("page", "GET", "/portal/invoices?status=open", 200),
        Ask("fragment", "GET", "/portal/invoices?status=overdue", 200, FRAGMENT),
        Ask("page", "GET", f"/portal/invoices/{invoice.group(1)}", 200),
        Ask("page", "GET", "/portal/payment-history", 200),
    ]
    api = [
        Ask("api", "GET", path, 200, {"Authorization": f"Bearer {token}"})
        for token in tokens
        for path in ("/api/portal/invoices", "/api/portal/dashboard")
    ]
    token = csrf.group(1)
    writes = [
        Ask("write", "POST", "/session/extend", 204, {"HX-Request": "true", "X-CSRFToken": token}),
        Ask(
            "write", "POST", "/portal/notifications/inbox/read-all", 303, form={"csrf_token": token}
        ),
    ]
    return pages, api, writes


def _drive(
    base: str,
    cookies: dict[str, str],
    asks: list[Ask],
    pause: float,
    stop: threading.Event,
    answers: list[Answer],
) -> None:
    for ask in itertools.cycle(asks):
        if stop.is_set():
            return
        # The API is asked without the session's cookie: its caller is the bearer token.
        client = load.Client(base, None if ask.kind == "api" else cookies, host=HOST)
        started = time.monotonic()
        try:
            status = client.request(ask.method, ask.path, ask.form, dict(ask.headers)).status
        except (OSError, http.client.HTTPException):
            status = 0
        answers.append(Answer(ask, started, time.monotonic(), status))
        time.sleep(pause)


def test_postgresql_restarted_and_stopped_under_load(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    began = time.monotonic()
    (tmp_path / "files").mkdir()
    migrate_and_seed(postgres.url, tmp_path / "files", clock.today())
    tokens = _tokens(postgres.url, 2)
    with (
        redis_server(tmp_path / "redis.log") as redis,
        _serve(postgres.url, tmp_path, redis.url) as server,
    ):
        cookies, _step = load.sign_in(server.base, "admin@acme.test", 0, host=HOST)
        pages, api, writes = _asks(load.Client(server.base, cookies, host=HOST), tokens)
        workers = server.workers()
        assert len(workers) == 2

        answers: list[Answer] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=_drive, args=(server.base, cookies, asks, pause, stop, answers))
            for asks, pause in (
                (pages, 0.0),
                (pages[2:] + pages[:2], 0.0),
                (api, 0.25),  # within the API's 120 a minute per token, retries counted
                (writes, 0.1),
            )
        ]
        marks: dict[str, float] = {}
        for thread in threads:
            thread.start()
        try:
            time.sleep(STEADY)
            marks["restart"] = time.monotonic()
            postgres.restart()
            marks["restarted"] = time.monotonic()
            time.sleep(STEADY)
            marks["stop"] = time.monotonic()
            postgres.stop()
            marks["stopped"] = time.monotonic()
            time.sleep(OUTAGE)
            marks["start"] = time.monotonic()
            postgres.start()
            marks["started"] = time.monotonic()
            time.sleep(STEADY + GRACE)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert server.process.poll() is None
        assert server.workers() == workers  # recovered by itself: no worker was replaced
        log = server.log.read_text(errors="replace")

    zero = marks["restart"]
    report = "\n".join(a.describe(zero) for a in sorted(answers, key=lambda a: a.started))
    where = f"{report}\n--- gunicorn log ---\n{log[-20000:]}\n--- postgres log ---\n"
    where += postgres.server_log()[-5000:]

    # Never a 500, never a dropped connection, never anything but the usual answer or 503.
    odd = [a for a in answers if a.status not in (a.ask.expected, 503)]
    assert not odd, f"unexpected answers: {[a.describe(zero) for a in odd]}\n{where}"
    assert "unhandled error" not in log and "Traceback" not in log, where

    # Steady: before the restart, between the faults, after both: the usual answers only.
    steady = [
        a
        for a in answers
        if a.ended < marks["restart"]
        or (a.started > marks["restarted"] + GRACE and a.ended < marks["stop"])
        or a.started > marks["started"] + GRACE
    ]
    unavailable = [a.describe(zero) for a in steady if a.status != a.ask.expected]
    assert not unavailable, f"503 outside the faults: {unavailable}\n{where}"
    after = Counter(a.ask.method for a in steady if a.started > marks["started"] + GRACE)
    after_api = sum(a.ask.kind == "api" for a in steady if a.started > marks["started"] + GRACE)
    assert after["GET"] > after_api > 0 and after["POST"] > 0, where

    # Down: whatever was asked and answered while nothing listened is 503.
    down = [a for a in answers if a.started > marks["stopped"] and a.ended < marks["start"]]
    assert down, f"nothing was asked while PostgreSQL was down\n{where}"
    assert all(a.status == 503 for a in down), where
    assert {a.ask.kind for a in down} >= {"page", "api"}, where

    # The restart dropped every connection; the reads asked meanwhile, or soon after on the
    # pool's dead connections, mostly got their page.
    reads = [
        a
        for a in answers
        if a.ask.method == "GET" and a.within(marks["restart"], marks["restarted"] + GRACE)
    ]
    served = sum(a.status == a.ask.expected for a in reads)
    assert len(reads) >= 3 and served / len(reads) >= 0.5, f"{served} of {len(reads)}\n{where}"
    assert "database connection lost" in log  # retried, and said so (WARNING)

    print(  # the figures, for a person reading the run (pytest -s)
        f"\n{len(answers)} answers in {time.monotonic() - began:.1f} s (with setup); "
        f"restart {marks['restarted'] - marks['restart']:.2f} s: {served} of {len(reads)} "
        f"reads served; {log.count('database connection lost')} retries logged; "
        f"down {marks['start'] - marks['stopped']:.2f} s: {len(down)} answers, all 503; "
        f"statuses {dict(Counter(a.status for a in answers))}"
    )
