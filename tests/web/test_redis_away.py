"""Redis away, portal up: sign-in, password reset, rate limits and readiness while a real
`redis-server` (started here, on a port of its own) is stopped or paused (SIGSTOP).

The app under test keeps its rate limits and its RQ queue on that server. While it is away the
limits are counted in this process's memory (Flask-Limiter's fallback, one warning per outage),
work waits in the outbox (the pages that hand it off say it is late), and no request waits on
Redis for more than a fraction of a second (portal/__init__.py, portal/runtime.py,
workers/queue.py). Once Redis is back, the dispatcher hands the work over and an RQ worker (in
this process, so that it sees the test's transaction) runs it, once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import SimpleWorker
from rq.job import Job

from portal.extensions import limiter
from portal.models import PaymentStatus
from portal.runtime import REFUSED_AT, RUN_WORK
from tests.conftest import Auth, Backend, csrf_token, make_app, smtp_server
from tests.redis_server import PAUSED, STOPPED, RedisServer
from tests.web.payment_helpers import invoice, method, pay, payment
from tests.web.security_helpers import dispose, shared_transaction
from tests.work import hold_recurring
from workers.dispatch import LOST_AFTER, Dispatcher
from workers.queue import RQJobQueue

# A request may wait on Redis once or twice (WEB_TIMEOUT each) before it falls back; under a
# loaded machine the rest of its work takes some time too.
BOUND = 1.5
FALLING_BACK = "Rate limit storage unreachable"
RECOVERED = "Rate limit storage recovered"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_app(backend: Backend, app: Flask, redis_server: RedisServer) -> Iterator[Flask]:
    """An app whose rate limits and job queue (RQ) are on the test's own Redis."""
    away = make_app(backend, redis_url=redis_server.url)
    yield away
    dispose(away)
    limiter.init_app(app)  # the limiter is global: the suite's app counts in memory again


def on_redis() -> bool:
    """Whether the limiter counts in Redis (not in its memory fallback)."""
    return limiter.limiter.storage is limiter.storage


@pytest.fixture
def client(redis_app: Flask, redis_server: RedisServer) -> Iterator[FlaskClient]:
    """A client from an address of its own (the fallback's memory outlives a test)."""
    assert on_redis()
    redis_app.extensions.pop(REFUSED_AT, None)  # what an earlier test's outage left
    address = f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(256)}"
    with shared_transaction(redis_app):
        yield from_address(redis_app, address)
        redis_server.repair()
        until_back_on_redis(redis_app.test_client())


def from_address(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def until_back_on_redis(client: FlaskClient) -> None:
    """Requests until the limiter looks at Redis again and finds it (it looks less often the
    longer an outage lasts: 1, 2, 4 … seconds apart)."""
    deadline = time.monotonic() + 40
    while not on_redis():
        assert time.monotonic() < deadline, "the limiter did not go back to Redis"
        assert client.get("/healthz").status_code == 200
        time.sleep(0.1)


def answered(call: Callable[[], Any]) -> tuple[Any, float]:
    """The answer and how long it took; a request still waiting after 10 s fails the test
    (rather than hanging it)."""
    pool = ThreadPoolExecutor(max_workers=1)
    started = time.perf_counter()
    try:
        answer = pool.submit(call).result(timeout=10)
    finally:
        pool.shutdown(wait=False)
    return answer, time.perf_counter() - started


def forgot(client: FlaskClient, email: str) -> tuple[Any, float]:
    token = csrf_token(client, "/password/forgot")
    return answered(
        lambda: client.post("/password/forgot", data={"csrf_token": token, "email": email})
    )


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("fault", [STOPPED, PAUSED])
def test_sign_in_and_password_reset_answer_while_redis_is_away(
    redis_app: Flask,
    redis_server: RedisServer,
    client: FlaskClient,
    fault: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = Auth(redis_app, client)
    redis_app.extensions["portal.clock"].advance(timedelta(seconds=30))
    with smtp_server(redis_app, monkeypatch) as inbox, caplog.at_level(logging.INFO):
        redis_server.fail(fault)
        password, password_took = answered(auth.login)
        assert password.status_code == 302 and password.headers["Location"] == "/login/mfa"
        code, code_took = answered(auth.code)
        assert code.status_code == 302 and code.headers["Location"] == "/portal/dashboard"
        assert client.get("/portal/dashboard").status_code == 200

        other = from_address(redis_app, client.environ_base["REMOTE_ADDR"])
        reset, reset_took = forgot(other, "ap@acme.test")
        assert reset.status_code == 302 and reset.headers["Location"] == "/login"
        assert inbox.messages == []  # it waits in the outbox
        again, _took = forgot(other, "ap@acme.test")  # this process knows the queue refuses
        assert again.status_code == 302
        assert "Our e-mail is running late right now" in other.get("/login").get_data(as_text=True)

        redis_server.repair()  # empty: it never had the work
        assert run_what_waits(redis_app, redis_server) == 2
        assert [m["To"] for m in inbox.messages] == ["ap@acme.test"] * 2  # one per request
        assert run_what_waits(redis_app, redis_server) == 0  # and never again
    assert max(password_took, code_took, reset_took) < BOUND, (
        password_took,
        code_took,
        reset_took,
    )
    assert len(messages(caplog, FALLING_BACK)) == 1  # once for the outage, not per request
    refused = messages(caplog, "the job queue refused send_password_reset")
    assert len(refused) == 2 and refused[0].levelno == logging.WARNING


def run_what_waits(app: Flask, server: RedisServer) -> int:
    """A worker's pass once Redis is back: the dispatcher finds Redis without the work handed
    over earlier and hands it over again (after LOST_AFTER), a worker runs it. How many pieces
    of work ran (the sweep, due too, is not counted)."""
    app.extensions["portal.clock"].advance(LOST_AFTER + timedelta(seconds=1))
    hold_recurring(app)  # the reminders' and monthly statements' work is not counted either
    queue = RQJobQueue(server.url)
    Dispatcher(app, queue).tick()
    worker = SimpleWorker([queue.queue], connection=queue.queue.connection)
    with app.app_context():
        worker.work(burst=True)
    finished = Job.fetch_many(
        queue.queue.finished_job_registry.get_job_ids(), connection=queue.queue.connection
    )
    ran = sum(1 for job in finished if job is not None and job.func_name == RUN_WORK)
    queue.queue.connection.flushdb()
    queue.queue.connection.close()
    return ran


def test_rate_limits_hold_in_memory_while_redis_is_away_and_in_redis_once_back(
    redis_app: Flask,
    redis_server: RedisServer,
    client: FlaskClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    limit = 5  # "5 per hour" for one address on /password/forgot
    with caplog.at_level(logging.INFO):
        redis_server.fail(STOPPED)
        away = f"away-{secrets.token_hex(4)}@example.test"
        for _ in range(limit):
            answer, took = forgot(client, away)
            assert answer.status_code == 302 and took < BOUND, (answer.status_code, took)
        refused, took = forgot(client, away)
        assert refused.status_code == 429 and took < BOUND
        assert not on_redis()
        [warning] = messages(caplog, FALLING_BACK)
        assert warning.levelno == logging.WARNING

        redis_server.repair()  # a new, empty Redis on the same port
        until_back_on_redis(client)
        assert messages(caplog, RECOVERED)
        back = f"back-{secrets.token_hex(4)}@example.test"
        for _ in range(limit):
            assert forgot(client, back)[0].status_code == 302
        assert forgot(client, back)[0].status_code == 429
    with redis_server.client() as redis:
        counted = [key.decode() for key in redis.scan_iter("LIMITS*")]
    assert any(back in key for key in counted), counted  # counted in Redis, not in memory
    assert not any(away in key for key in counted)


def test_readiness_names_redis_and_stays_ready_without_it(
    redis_server: RedisServer, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    def ready() -> dict[str, str]:
        answer, took = answered(lambda: client.get("/readyz"))
        assert answer.status_code == 200 and took < BOUND, (answer.status_code, took)
        body: dict[str, str] = answer.json
        return body

    on_time = {"status": "ready", "redis": "ok", "work": "ok"}
    assert ready() == on_time
    for fault in (STOPPED, PAUSED):
        redis_server.fail(fault)
        with caplog.at_level(logging.WARNING):
            assert ready() == {**on_time, "redis": "unreachable"}
        assert messages(caplog, "readiness: redis check failed")
        redis_server.repair()
        assert ready() == on_time


def test_a_payment_scheduled_while_redis_is_away_waits_in_the_outbox_for_its_day(
    redis_app: Flask,
    redis_server: RedisServer,
    client: FlaskClient,
) -> None:
    Auth(redis_app, client).sign_in()
    db = redis_app.extensions["portal.db"].sessionmaker()
    inv = invoice(db, "INV-1003")
    clock = redis_app.extensions["portal.clock"]
    day = clock.today() + timedelta(days=3)
    redis_server.fail(STOPPED)
    (confirmed, pid), took = answered(
        lambda: pay(client, [inv], method(db, "4242").public_id, scheduled_for=day.isoformat())
    )
    assert confirmed.status_code == 303 and pid and took < 2 * BOUND, (confirmed, took)
    assert payment(db, pid).status is PaymentStatus.SCHEDULED

    redis_server.repair()  # empty: the work was never in it, only in the outbox
    clock.advance(timedelta(days=3, hours=7))
    assert run_what_waits(redis_app, redis_server) == 2  # the payment, then its receipt mail
    assert payment(db, pid).status is PaymentStatus.SUCCEEDED
    db.close()
