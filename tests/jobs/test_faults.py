"""Background work survives faults: real worker processes (`flask --app wsgi jobs worker`), a
`redis-server` of the test's own that is killed, paused and started again empty, a real SMTP
server (that may answer late), and a fresh committed database per test (an SQLite file, and a
PostgreSQL database of its own). The web side is an app in this process, committing for real.

What is asserted is what a payer or an operator would see: the payment settled, one mail of
each, one line in the document, every row of the outbox done, within a deadline, and still
once a while later. Nothing waits a fixed time for something to happen: every wait polls a
condition with a deadline (the few fixed spans are the fault's own length, or the window in
which nothing more may happen). Each worker's output is in a file under the test's tmp_path;
a deadline that passes prints them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from rq import Worker
from rq.job import Job as RQJob
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import clock, tenancy
from portal.db import unit_of_work
from portal.gateways.sandbox import TEST_BANK_ACCOUNT, TEST_BANK_ROUTING
from portal.models import Invoice, Payment, PaymentMethod, PaymentStatus, Schedule, Work, WorkState
from portal.runtime import DELIVER_SANDBOX_SETTLEMENT, RUN_WORK, Runtime
from tests.conftest import (
    BACKENDS,
    TEST_SECRET,
    Auth,
    Backend,
    _postgres_database,
    csrf_token,
    make_app,
    migrate_and_seed,
)
from tests.redis_server import PAUSED, STOPPED, RedisServer
from tests.web.payment_helpers import pay
from tests.web.security_helpers import dispose
from tests.web.test_payment_methods import start_setup
from tests.work import hold_recurring
from workers.jobs import NOT_RUN
from workers.queue import get_queue

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_URL = "http://localhost"
WRITE = "tests.jobs.fault_jobs.write_document"
WRITE_SLOWLY = "tests.jobs.fault_jobs.write_document_slowly"
RESET_SUBJECT = "Reset your Billing Portal password"
SCHEDULER_LOCK = "rq:scheduler-lock:portal"  # what RQ's scheduler would leave behind
# What a worker must not inherit from the environment the tests run in.
PORTAL_VARIABLES = (
    "SECRET_KEY",
    "SECRET_KEY_FALLBACKS",
    "DATABASE_URL",
    "REDIS_URL",
    "MAIL_URL",
    "MAIL_TIMEOUT",
    "PUBLIC_URL",
    "PAYMENT_GATEWAY",
    "METRICS_TOKEN",
)
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# the parts: a database, a Redis, a mail server, workers --------------------------------------


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A database of the test's own, migrated, seeded with the demo data and committed."""
    storage = tmp_path / "storage"
    storage.mkdir()
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'portal.db'}"])
    else:
        urls = _postgres_database()
    url = next(urls)
    today = clock.today()
    migrate_and_seed(url, storage, today)
    yield Backend(request.param, url, today, storage)
    for _ in urls:  # finish the generator: drops the PostgreSQL database
        pass


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Mailbox:
    """A real SMTP server on loopback. With `delay` it takes each message, then holds its
    answer back that long (a server slower than the client's timeout)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.delay = 0.0
        self.port = _free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 OK"

    def resets(self, to: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == to and m["Subject"] == RESET_SUBJECT]

    def about(self, public_id: str) -> list[Message]:
        """The mails that tell a payer about the payment `public_id` (its link is in them)."""
        found = []
        for message in self.messages:
            payload = message.get_payload(decode=True)
            if isinstance(payload, bytes) and f"/portal/payments/{public_id}" in payload.decode():
                found.append(message)
        return found


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.controller.start()
    try:
        yield box
    finally:
        box.controller.stop()


def _children(pid: int) -> list[int]:
    """The processes `pid` started (and theirs), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *_children(int(child))]
    return found


class Workers:
    """Worker processes, each the leader of a process group of its own (it and the children
    RQ forks for jobs), its output in a file."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker-{len(self.started) + 1}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "worker"],
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes], *, its_group_only: bool = False) -> None:
        """`kill -9` of the worker's process group and of its children's: RQ runs each job in
        a child of a process group of its own (`os.setpgrp`), which a kill of the worker's
        group alone (`its_group_only`) leaves running. Without it, as a machine or a container
        going down: nothing survives."""
        children = [] if its_group_only else _children(process.pid)
        for group in [process.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        process.wait(10)

    def kill_all(self) -> None:
        for process in self.started:
            self.kill(process)

    def output(self, limit: int = 8000) -> str:
        """The end of each worker's output (`limit` characters of each)."""
        return "\n".join(
            f"--- {log.name} ---\n{log.read_text(errors='replace')[-limit:]}"
            for log in sorted(self.logs.glob("worker-*.log"))
        )


def worker_env(backend: Backend, redis: RedisServer, mailbox: Mailbox, tmp: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in PORTAL_VARIABLES and not name.startswith(("PORTAL_", "STRIPE_"))
    }
    env.update(
        {
            "PORTAL_ENV": "development",
            "SECRET_KEY": TEST_SECRET,
            "DATABASE_URL": backend.url,
            "REDIS_URL": redis.url,
            "MAIL_URL": mailbox.url,
            "PUBLIC_URL": PUBLIC_URL,
            "PAYMENT_GATEWAY": "sandbox",
            "PORTAL_STORAGE_DIR": str(backend.storage),
            "PORTAL_MAIL_DIR": str(tmp / "mail"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@dataclass
class Portal:
    """The web app (this process), its Redis, its mail server and its workers."""

    app: Flask
    redis: RedisServer
    mailbox: Mailbox
    workers: Workers
    tmp: Path
    seen: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.extensions["portal.runtime"]
        return runtime

    def read(self, query: Callable[[Session], T]) -> T:
        """`query` in a session of its own, ended at once (a later read sees later commits)."""
        db = self.app.extensions["portal.db"]
        with self.app.app_context(), db.sessionmaker() as session, tenancy.system(session):
            return query(session)

    def write(self, change: Callable[[Session], T]) -> T:
        """`change`, committed (work it hands off goes to Redis after the commit)."""
        db = self.app.extensions["portal.db"]
        with (
            self.app.app_context(),
            unit_of_work(writes=True),
            db.sessionmaker() as session,
            tenancy.system(session),
        ):
            result = change(session)
            session.commit()
            return result

    def hand_off(self, job: str, *args: Any) -> int:
        """Ask for `job(*args)` as the portal does (a row, handed to Redis after the commit)."""

        def ask(session: Session) -> None:
            self.runtime.hand_off(session, job, *args)

        self.write(ask)
        return self.read(
            lambda s: s.scalars(select(Work.id).order_by(Work.id.desc()).limit(1)).one()
        )

    def rows(self) -> list[tuple[int, str, str, int, str | None]]:
        return self.read(
            lambda s: [
                (w.id, w.job.rpartition(".")[2], w.state.value, w.attempts, w.outcome)
                for w in s.scalars(select(Work).order_by(Work.id))
            ]
        )

    def row(self, work_id: int) -> Work:
        found = self.read(lambda s: s.get(Work, work_id))
        assert found is not None
        return found

    def status(self, public_id: str) -> PaymentStatus:
        return self.read(
            lambda s: s.scalars(select(Payment.status).where(Payment.public_id == public_id)).one()
        )

    def diagnosis(self) -> str:
        rows = "\n".join(map(str, self.rows()))
        return f"outbox:\n{rows}\nseen: {self.seen[-3:]}\n{self.workers.output()}"

    def until(self, what: str, check: Callable[[], object], within: float) -> float:
        """Poll `check` until it holds; how long that took. Past `within` seconds the test
        fails with the outbox and the workers' output."""
        started = time.monotonic()
        while True:
            if check():
                return time.monotonic() - started
            if time.monotonic() - started > within:
                pytest.fail(f"{what}: not within {within:.0f} s\n{self.diagnosis()}")
            time.sleep(0.2)

    def still(self, what: str, check: Callable[[], object], seconds: float) -> None:
        """`check` holds throughout the next `seconds` (nothing more happens)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            assert check(), f"{what}: no longer true\n{self.diagnosis()}"
            time.sleep(0.2)

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def signed_in(self) -> FlaskClient:
        """A client signed in with both factors as admin@acme.test (a fresh database: the
        current code was never used)."""
        client = self.client()
        auth = Auth(self.app, client)
        first = auth.login()
        assert first.status_code == 302 and first.headers["Location"] == "/login/mfa"
        assert auth.code().status_code == 302
        return client


@pytest.fixture
def portal(
    database: Backend, redis_server: RedisServer, mailbox: Mailbox, tmp_path: Path
) -> Iterator[Portal]:
    app = make_app(
        database,
        redis_url=redis_server.url,
        mail_url=mailbox.url,
        public_url=PUBLIC_URL,
        payment_gateway="sandbox",
        RATELIMIT_STORAGE_URI="memory://",  # the limits are not under test here
    )
    hold_recurring(app)  # only the sweep recurs here (tests/jobs/test_reminders.py: the others)
    workers = Workers(worker_env(database, redis_server, mailbox, tmp_path), tmp_path)
    try:
        yield Portal(app, redis_server, mailbox, workers, tmp_path)
    finally:
        workers.kill_all()
        print(workers.output(limit=200_000))  # shown when the test failed
        dispose(app)


# what the tests do as a person would ----------------------------------------------------------


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def invoice(session: Session, number: str) -> Invoice:
    return session.scalars(select(Invoice).where(Invoice.number == number)).one()


def method_id(session: Session, last4: str) -> str:
    return session.scalars(
        select(PaymentMethod.public_id).where(
            PaymentMethod.last4 == last4, PaymentMethod.removed_at.is_(None)
        )
    ).one()


def add_bank_account(portal: Portal, client: FlaskClient) -> str:
    hosted = start_setup(client, "bank_account")
    page = client.get(hosted).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page
    done = client.post(
        hosted,
        data={
            "csrf_token": token.group(1),
            "routing": TEST_BANK_ROUTING,
            "account": TEST_BANK_ACCOUNT,
        },
    )
    assert done.status_code in (302, 303), done.get_data(as_text=True)
    assert client.get(done.headers["Location"]).status_code < 500
    return portal.read(lambda s: method_id(s, TEST_BANK_ACCOUNT[-4:]))


def forgot_password(client: FlaskClient, email: str) -> Any:
    token = csrf_token(client, "/password/forgot")
    return client.post("/password/forgot", data={"csrf_token": token, "email": email})


def make_due(portal: Portal, public_id: str) -> None:
    """A scheduled payment whose day was yesterday (its own job is days away): only the sweep
    charges it now."""

    def back_date(session: Session) -> None:
        found = session.scalars(select(Payment).where(Payment.public_id == public_id)).one()
        found.scheduled_for = clock.today() - timedelta(days=1)

    portal.write(back_date)


def next_sweep(portal: Portal) -> datetime | None:
    return portal.read(
        lambda s: s.scalars(select(Schedule.next_run_at).where(Schedule.name == "sweep")).first()
    )


# 1. Redis killed while the worker runs, started again empty ---------------------------------


def test_work_asked_for_while_redis_is_down_is_done_once_when_it_comes_back_empty(
    portal: Portal,
) -> None:
    worker = portal.workers.start()
    client = portal.signed_in()
    bank = add_bank_account(portal, client)
    owed = portal.read(lambda s: invoice(s, "INV-1004"))
    reset_for = "ap@acme.test"
    document = portal.tmp / "statement.txt"
    token = secrets.token_hex(6)

    portal.redis.fail(STOPPED)
    confirmed, paid = pay(client, [owed], bank)
    assert confirmed.status_code == 303 and paid, confirmed.get_data(as_text=True)
    shown = client.get(f"/portal/payments/{paid}")
    assert shown.status_code == 200 and "being processed" in shown.get_data(as_text=True)
    reset = forgot_password(portal.client(), reset_for)
    assert reset.status_code == 302 and reset.headers["Location"] == "/login"
    portal.hand_off(WRITE, str(document), token)
    assert portal.status(paid) is PaymentStatus.PROCESSING
    # Redis stays away until the settlement is due (SETTLE_AFTER after the payment).
    settles = portal.read(
        lambda s: s.scalars(
            select(Work.run_after).where(Work.job == DELIVER_SANDBOX_SETTLEMENT)
        ).one()
    )
    portal.until("the settlement is due", lambda: clock.now() > settles, 30)
    assert lines(document) == []

    portal.redis.repair()  # a new, empty Redis on the same port
    restarted = time.monotonic()

    def everything_once() -> bool:
        seen = {
            "payment": portal.status(paid).value,
            "resets": len(portal.mailbox.resets(reset_for)),
            "payment mails": len(portal.mailbox.about(paid)),
            "document": lines(document),
            "unfinished": [r for r in portal.rows() if r[2] != WorkState.DONE.value],
        }
        portal.seen.append(str(seen))
        return seen == {
            "payment": PaymentStatus.SUCCEEDED.value,
            "resets": 1,
            "payment mails": 1,
            "document": [token],
            "unfinished": [],
        }

    portal.until("everything done, once each", everything_once, 120)
    took = time.monotonic() - restarted
    portal.still("still once each", everything_once, 6)
    [receipt] = portal.mailbox.about(paid)
    assert receipt["Subject"].startswith("Receipt ")
    assert worker.poll() is None, portal.diagnosis()  # the same worker came through
    print(f"all done {took:.1f} s after Redis came back")


# 2. kill -9 of a worker mid-job --------------------------------------------------------------


def test_a_job_whose_worker_was_killed_midway_runs_again_once_on_a_new_worker(
    portal: Portal,
) -> None:
    first = portal.workers.start()
    document = portal.tmp / "document.txt"
    started = Path(f"{document}.started")
    work_id = portal.hand_off(WRITE_SLOWLY, str(document), "slow", 5)
    portal.until("the job started", lambda: lines(started) == ["slow"], 60)
    portal.workers.kill(first)
    assert lines(document) == []
    assert portal.row(work_id).state is WorkState.RUNNING  # held by a process that is gone

    portal.workers.start()

    def done() -> bool:  # its line written, and its end recorded (a moment later)
        return lines(document) == ["slow"] and portal.row(work_id).state is WorkState.DONE

    took = portal.until("the job done on the new worker", done, 30)
    row = portal.row(work_id)
    assert (row.state, row.attempts, row.outcome) == (WorkState.DONE, 2, "written"), row.outcome
    assert lines(started) == ["slow", "slow"]  # started twice, its effect once
    portal.still("one line", lambda: lines(document) == ["slow"], 3)
    print(f"done {took:.1f} s after the new worker was started")


@pytest.mark.parametrize("database", BACKENDS[:1], indirect=True)  # processes, not data
def test_a_job_outlives_a_kill_of_its_workers_group_alone_and_is_not_run_again(
    portal: Portal,
) -> None:
    first = portal.workers.start()
    document = portal.tmp / "document.txt"
    started = Path(f"{document}.started")
    work_id = portal.hand_off(WRITE_SLOWLY, str(document), "slow", 3)
    portal.until("the job started", lambda: lines(started) == ["slow"], 60)
    portal.workers.kill(first, its_group_only=True)  # RQ's child running the job lives on
    portal.workers.start()  # its dispatcher finds the job's process alive and leaves it be

    def done() -> bool:  # its line written, and its end recorded (a moment later)
        return lines(document) == ["slow"] and portal.row(work_id).state is WorkState.DONE

    portal.until("the job done by the child", done, 30)
    portal.still("one line", lambda: lines(document) == ["slow"], 3)
    row = portal.row(work_id)
    assert (row.state, row.attempts, row.outcome) == (WorkState.DONE, 1, "written"), row.outcome
    assert lines(started) == ["slow"]


# 3. a mail server that answers after the client gave up ---------------------------------------


@pytest.mark.parametrize("database", BACKENDS[:1], indirect=True)  # processes, not data
def test_a_mail_the_server_took_but_answered_late_is_not_sent_again(portal: Portal) -> None:
    portal.mailbox.delay = 3  # longer than the worker waits for it (MAIL_TIMEOUT)
    portal.workers.env["MAIL_TIMEOUT"] = "1"
    portal.workers.start()
    reset = forgot_password(portal.client(), "ap@acme.test")
    assert reset.status_code == 302
    [work_id] = portal.read(lambda s: list(s.scalars(select(Work.id))))

    portal.until("the reset ended", lambda: portal.row(work_id).state is WorkState.DONE, 60)
    row = portal.row(work_id)
    assert row.outcome and row.outcome.startswith("unconfirmed"), row.outcome
    assert row.attempts == 1
    # The first retry would come RETRY_DELAYS[0] (10 s) later: nothing comes.
    portal.still("one message", lambda: len(portal.mailbox.resets("ap@acme.test")) == 1, 12)
    assert portal.row(work_id).state is WorkState.DONE


# 4. the recurring sweep comes back by itself --------------------------------------------------


# About a minute whatever the database (the sweep runs every 30 s): on PostgreSQL only, unless
# the run is on SQLite only.
@pytest.mark.parametrize(
    "database", [b for b in BACKENDS if b == "postgresql"] or BACKENDS, indirect=True
)
def test_the_sweep_runs_when_a_worker_starts_after_redis_comes_back_empty_and_after_a_kill(
    portal: Portal,
) -> None:
    client = portal.signed_in()
    card = portal.read(lambda s: method_id(s, "4242"))
    later = (clock.today() + timedelta(days=5)).isoformat()
    scheduled = []
    for number in ("INV-1003", "INV-1004", "INV-1013"):
        owed = portal.read(lambda s, n=number: invoice(s, n))  # type: ignore[misc]
        confirmed, public_id = pay(client, [owed], card, scheduled_for=later)
        assert confirmed.status_code == 303 and public_id
        assert portal.status(public_id) is PaymentStatus.SCHEDULED
        scheduled.append(public_id)
    at_start, after_restart, after_kill = scheduled

    def charged(public_id: str) -> Callable[[], bool]:
        return lambda: portal.status(public_id) is PaymentStatus.SUCCEEDED

    def stale_lock() -> None:
        with portal.redis.client() as redis:
            redis.set(SCHEDULER_LOCK, "a-scheduler-killed-long-ago")

    # a worker starts: the sweep runs (its schedule row appears) and charges the due payment
    stale_lock()
    make_due(portal, at_start)
    assert next_sweep(portal) is None
    worker = portal.workers.start()
    took = [portal.until("a sweep as the worker starts", charged(at_start), 60)]
    first = next_sweep(portal)
    assert first is not None

    # Redis killed and started again, empty (the lock left stale again)
    portal.redis.fail(STOPPED)
    make_due(portal, after_restart)
    portal.redis.repair()
    stale_lock()
    took.append(portal.until("a sweep after Redis came back", charged(after_restart), 60))
    second = next_sweep(portal)
    assert second is not None and second > first

    # kill -9 of the worker, a new one started
    portal.workers.kill(worker)
    make_due(portal, after_kill)
    portal.workers.start()
    took.append(portal.until("a sweep on a new worker", charged(after_kill), 60))
    third = next_sweep(portal)
    assert third is not None and third > second
    print("sweeps after: start {:.1f} s, Redis back {:.1f} s, new worker {:.1f} s".format(*took))


# 5. the same work delivered twice ---------------------------------------------------------------


@pytest.mark.parametrize("database", BACKENDS[:1], indirect=True)  # processes, not data
def test_work_handed_to_redis_twice_runs_once_with_two_workers(portal: Portal) -> None:
    portal.workers.start()
    portal.workers.start()

    def registered() -> bool:
        with portal.redis.client() as redis:
            return len(Worker.all(connection=redis)) == 2

    portal.until("two workers listening", registered, 60)
    document = portal.tmp / "document.txt"
    work_id = portal.hand_off(WRITE_SLOWLY, str(document), "twice", 2)
    again = f"outbox-{work_id}-again"
    queue = get_queue(portal.redis.url)
    queue.enqueue(RUN_WORK, work_id, job_id=again)
    queue.connection.close()
    deliveries = [f"outbox-{work_id}-1", again]

    def finished() -> list[RQJob]:
        with portal.redis.client() as redis:
            jobs = RQJob.fetch_many(deliveries, connection=redis)
            if all(job is not None and job.get_status() == "finished" for job in jobs):
                return [job for job in jobs if job is not None]
            return []

    portal.until("both deliveries finished", finished, 60)
    results = sorted(str(job.return_value()) for job in finished())
    assert results[0].startswith(NOT_RUN) and results[1] == "written", results
    assert lines(document) == ["twice"]
    assert lines(Path(f"{document}.started")) == ["twice"]
    row = portal.row(work_id)
    assert (row.state, row.attempts) == (WorkState.DONE, 1)
    print("ran in workers:", sorted(str(job.worker_name) for job in finished()))


# also: a paused Redis -----------------------------------------------------------------------


@pytest.mark.parametrize("database", BACKENDS[:1], indirect=True)  # processes, not data
def test_a_worker_recovers_by_itself_from_a_paused_redis(portal: Portal) -> None:
    worker = portal.workers.start()
    document = portal.tmp / "document.txt"
    portal.hand_off(WRITE, str(document), "before")
    portal.until("work before the pause", lambda: lines(document) == ["before"], 60)

    portal.redis.fail(PAUSED)
    portal.hand_off(WRITE, str(document), "during")
    time.sleep(10)  # the fault itself: Redis paused for 10 s
    portal.redis.repair()
    took = portal.until("work asked for during the pause", lambda: len(lines(document)) == 2, 60)
    portal.hand_off(WRITE, str(document), "after")

    def all_done() -> bool:  # three lines, and every row's end recorded (a moment later)
        rows_done = all(state == WorkState.DONE.value for _i, _j, state, _a, _o in portal.rows())
        return len(lines(document)) == 3 and rows_done

    portal.until("work asked for after", all_done, 30)
    assert lines(document) == ["before", "during", "after"]
    assert worker.poll() is None, portal.workers.output()  # the same worker, still running
    print(f"work of the pause done {took:.1f} s after Redis went on")


@pytest.mark.parametrize("database", BACKENDS[:1], indirect=True)  # processes, not data
def test_a_worker_stops_on_sigterm_idle_at_once_and_busy_after_its_job(portal: Portal) -> None:
    """A deploy or `systemctl stop` sends SIGTERM: an idle worker exits (RQ's loop is not
    started again), a busy one finishes its job first (a warm shutdown), then exits."""
    idle = portal.workers.start()
    portal.until("the worker listens", lambda: "Listening on" in portal.workers.output(), 60)
    time.sleep(1.5)  # a few idle dispatcher passes
    idle.send_signal(signal.SIGTERM)
    portal.until("the idle worker exits", lambda: idle.poll() is not None, 15)

    busy = portal.workers.start()
    document = portal.tmp / "document.txt"
    portal.hand_off(WRITE_SLOWLY, str(document), "busy", 3)
    started = Path(f"{document}.started")
    portal.until("the job starts", lambda: started.exists(), 60)
    busy.send_signal(signal.SIGTERM)
    portal.until("the busy worker exits", lambda: busy.poll() is not None, 30)
    assert lines(document) == ["busy"], portal.workers.output()  # its job finished first
    assert busy.returncode == 0, portal.workers.output()
