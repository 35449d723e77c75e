"""The outbox's rules, on both databases, in the test's transaction: work is written with the
change that asks for it, runs once whatever delivers it how often, is retried after an error,
rerun when its process died, and mail is sent at most once (a real SMTP server throughout)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import Schedule, Work, WorkState
from portal.services import outbox
from tests.conftest import Inbox, smtp_server, transactional
from tests.jobs import outbox_jobs
from workers import dispatch, jobs

COUNT = "tests.jobs.outbox_jobs.count"
FAIL = "tests.jobs.outbox_jobs.fail"
SEND_MAIL = "workers.jobs.send_mail"


@pytest.fixture(autouse=True)
def _forget_counts() -> Iterator[None]:
    outbox_jobs.done.clear()
    yield
    outbox_jobs.done.clear()


def _ask(app: Flask, db: Session, job: str, *args: Any, after: timedelta | None = None) -> int:
    runtime = app.extensions["portal.runtime"]
    now = app.extensions["portal.clock"].now()
    with app.app_context():
        runtime.enqueue_at(db, now + (after or timedelta(0)), job, *args)
    db.commit()
    return max(db.scalars(select(Work.id)))


def _row(db: Session, work_id: int) -> Work:
    row = db.get(Work, work_id, populate_existing=True)
    assert row is not None
    return row


def _run(app: Flask, work_id: int) -> str:
    with app.app_context():
        return jobs.run_work(work_id)


def test_work_due_now_is_handed_over_after_the_commit_and_later_work_waits(
    app: Flask, db: Session
) -> None:
    queue = app.extensions["portal.jobs"]
    now_id = _ask(app, db, COUNT, "a")
    later_id = _ask(app, db, COUNT, "b", after=timedelta(hours=1))
    assert _row(db, now_id).state is WorkState.QUEUED
    assert _row(db, later_id).state is WorkState.PENDING
    assert queue.handed == [("run_work", (now_id,), f"outbox-{now_id}-1")]


def test_nothing_is_handed_over_when_the_transaction_rolls_back(app: Flask, db: Session) -> None:
    runtime = app.extensions["portal.runtime"]
    with app.app_context():
        runtime.hand_off(db, COUNT, "never")
    db.rollback()
    assert app.extensions["portal.jobs"].handed == []
    assert db.scalars(select(Work)).all() == []


def test_work_asked_for_in_a_savepoint_is_handed_over_with_the_outer_commit(
    app: Flask, db: Session
) -> None:
    queue = app.extensions["portal.jobs"]
    with db.begin_nested():
        work_id = _ask_uncommitted(app, db, COUNT, "inner")
    assert queue.handed == []  # the savepoint's release is not a commit
    db.commit()
    assert queue.handed == [("run_work", (work_id,), f"outbox-{work_id}-1")]


def _ask_uncommitted(app: Flask, db: Session, job: str, *args: Any) -> int:
    with app.app_context():
        app.extensions["portal.runtime"].hand_off(db, job, *args)
    return max(db.scalars(select(Work.id)))


def test_work_delivered_twice_runs_once(app: Flask, db: Session) -> None:
    work_id = _ask(app, db, COUNT, "twice")
    assert _run(app, work_id) == "counted twice"
    assert _run(app, work_id).startswith("not run")
    assert outbox_jobs.done["twice"] == 1
    row = _row(db, work_id)
    assert (row.state, row.attempts, row.outcome) == (WorkState.DONE, 1, "counted twice")


def test_later_work_does_not_run_early_even_if_delivered(app: Flask, db: Session) -> None:
    work_id = _ask(app, db, COUNT, "early", after=timedelta(minutes=5))
    assert _run(app, work_id).startswith("not run")
    assert outbox_jobs.done["early"] == 0
    app.extensions["portal.clock"].advance(timedelta(minutes=5))
    assert app.extensions["portal.jobs"].run_due() == 1
    assert outbox_jobs.done["early"] == 1


def test_a_failing_job_is_retried_later_then_given_up(app: Flask, db: Session) -> None:
    clock = app.extensions["portal.clock"]
    queue = app.extensions["portal.jobs"]
    work_id = _ask(app, db, FAIL, "x")
    assert _run(app, work_id) == "failed: RuntimeError: x went wrong"
    for attempt, delay in enumerate(outbox.RETRY_DELAYS, 1):
        row = _row(db, work_id)
        assert (row.state, row.attempts) == (WorkState.PENDING, attempt)
        assert abs(row.run_after - (clock.now() + delay)) < timedelta(seconds=5)
        assert queue.run_due() == 0  # not before its time
        clock.advance(delay)
        assert queue.run_due() == 1
    row = _row(db, work_id)
    assert row.state is WorkState.FAILED and row.attempts == outbox.MAX_ATTEMPTS
    assert row.outcome == "RuntimeError: x went wrong"
    assert outbox_jobs.done["tried x"] == outbox.MAX_ATTEMPTS


def test_recover_reruns_work_whose_process_died_and_never_resends_mail(
    app: Flask, db: Session
) -> None:
    now = app.extensions["portal.clock"].now()
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = f"{jobs.worker_identity().rpartition(':')[0]}:{ended.stdout.strip()}"
    living = jobs.worker_identity()
    elsewhere = "another-host:1"
    rows = {}
    for name, by, state, age in [
        ("dead running", dead, WorkState.RUNNING, timedelta(0)),
        ("dead sending", dead, WorkState.SENDING, timedelta(0)),
        ("living", living, WorkState.RUNNING, timedelta(minutes=1)),
        ("living, past its lease", living, WorkState.RUNNING, outbox.LEASE * 2),
        ("elsewhere, recent", elsewhere, WorkState.RUNNING, timedelta(minutes=1)),
        ("elsewhere, past its lease", elsewhere, WorkState.RUNNING, outbox.LEASE * 2),
    ]:
        row = outbox.add(db, COUNT, [name], now=now)
        row.state, row.claimed_by, row.claimed_at, row.attempts = state, by, now - age, 1
        rows[name] = row.id
    db.commit()
    assert dispatch.alive(dead) is False and dispatch.alive(living) is True
    assert dispatch.alive(elsewhere) is None
    with app.app_context():
        counts = outbox.recover(db, now, dispatch.alive)
    db.commit()
    assert counts == {"rerun": 3, "unconfirmed": 1}
    states = {name: _row(db, i).state for name, i in rows.items()}
    assert states == {
        "dead running": WorkState.PENDING,
        "dead sending": WorkState.DONE,
        "living": WorkState.RUNNING,
        "living, past its lease": WorkState.PENDING,  # its pid is someone else's by now
        "elsewhere, recent": WorkState.RUNNING,
        "elsewhere, past its lease": WorkState.PENDING,
    }
    assert _row(db, rows["dead sending"]).outcome.startswith("unconfirmed")
    assert app.extensions["portal.jobs"].run_due() == 3
    assert outbox_jobs.done == {
        "dead running": 1,
        "living, past its lease": 1,
        "elsewhere, past its lease": 1,
    }


def test_a_hand_over_is_made_once_and_a_lost_one_again_under_a_new_id(
    app: Flask, db: Session
) -> None:
    now = app.extensions["portal.clock"].now()
    later = now + timedelta(minutes=1)
    row = outbox.add(db, COUNT, ["x"], now=now, run_after=later)
    assert row.state is WorkState.PENDING and outbox.due(db, now) == []
    assert outbox.due(db, later) == [row.id]
    assert outbox.hand_over(db, row.id, later) == f"outbox-{row.id}-1"
    assert outbox.hand_over(db, row.id, later) is None  # another dispatcher was first
    assert outbox.hand_over(db, row.id, later, again_after=1) == f"outbox-{row.id}-2"
    assert outbox.hand_over(db, row.id, later, again_after=1) is None  # made once, not twice


def test_a_schedule_is_claimed_by_one_caller_per_period(app: Flask, db: Session) -> None:
    now = app.extensions["portal.clock"].now()
    every = timedelta(seconds=30)
    assert outbox.claim_schedule(db, "sweep", every, now) is True  # created, due at once
    assert outbox.claim_schedule(db, "sweep", every, now) is False
    assert outbox.claim_schedule(db, "sweep", every, now + every - timedelta(seconds=1)) is False
    assert outbox.claim_schedule(db, "sweep", every, now + every) is True
    schedule = db.get(Schedule, "sweep")
    assert schedule is not None and schedule.next_run_at == now + 2 * every


def test_finished_work_is_forgotten_after_two_weeks(app: Flask, db: Session) -> None:
    clock = app.extensions["portal.clock"]
    old = _ask(app, db, COUNT, "old")
    _run(app, old)
    clock.advance(outbox.KEEP + timedelta(minutes=1))
    recent = _ask(app, db, COUNT, "recent")
    _run(app, recent)
    waiting = _ask(app, db, COUNT, "waiting", after=timedelta(days=30))
    with app.app_context():
        assert jobs.prune_finished_work() == 1
    assert {r.id for r in db.scalars(select(Work))} == {recent, waiting}


# mail: at most once, with a stable Message-ID ---------------------------------------------


def test_mail_is_marked_sending_before_the_server_has_it_and_named_after_its_work(
    app: Flask, db: Session, smtp: Inbox
) -> None:
    work_id = _ask(app, db, SEND_MAIL, "ap@acme.test", "Hello", "Body")
    seen: list[WorkState] = []

    async def look(_server: Any, _session: Any, envelope: Any) -> str:
        seen.append(_row(db, work_id).state)  # what the database said as the message arrived
        return await Inbox.handle_DATA(smtp, _server, _session, envelope)

    smtp.handle_DATA = look  # type: ignore[method-assign]
    assert app.extensions["portal.jobs"].run_due() == 1
    assert seen == [WorkState.SENDING]
    [message_id] = [m["Message-ID"] for m in smtp.messages]
    assert re.fullmatch(rf"<work-{work_id}\.\d+@localhost>", message_id)  # PUBLIC_URL's host
    assert _row(db, work_id).state is WorkState.DONE


class LateInbox(Inbox):
    """Takes the message, then answers after the client has stopped waiting."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(1.5)
        return answer


def test_a_mail_server_that_answers_too_late_gets_the_message_once(
    app: Flask, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = app.extensions["portal.clock"]
    with smtp_server(app, monkeypatch, handler=LateInbox()) as inbox:
        settings_ = dataclasses.replace(app.config["SETTINGS"], mail_timeout=0.5)
        monkeypatch.setitem(app.config, "SETTINGS", settings_)
        work_id = _ask(app, db, SEND_MAIL, "ap@acme.test", "Receipt", "Paid")
        assert _run(app, work_id) == "unconfirmed"
        for delay in outbox.RETRY_DELAYS:  # whatever retries would have come
            clock.advance(delay)
            assert app.extensions["portal.jobs"].run_due() == 0
            assert _run(app, work_id).startswith("not run")
        row = _row(db, work_id)
        assert row.state is WorkState.DONE and row.outcome.startswith("unconfirmed: ")
        deadline = time.monotonic() + 5  # the server's own thread files the message
        while not inbox.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(inbox.messages) == 1


class RefusingInbox(Inbox):
    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code
        self.offered = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.offered += 1
        return self.code


@pytest.mark.parametrize(
    ("answer", "state"),
    [("451 4.3.0 try again later", WorkState.PENDING), ("554 5.7.1 refused", WorkState.FAILED)],
)
def test_a_mail_server_that_says_no_is_asked_again_only_when_it_said_later(
    app: Flask, db: Session, monkeypatch: pytest.MonkeyPatch, answer: str, state: WorkState
) -> None:
    with smtp_server(app, monkeypatch, handler=RefusingInbox(answer)) as inbox:
        work_id = _ask(app, db, SEND_MAIL, "ap@acme.test", "Receipt", "Paid")
        assert _run(app, work_id).startswith("failed: SMTPDataError")
        assert _row(db, work_id).state is state
        assert isinstance(inbox, RefusingInbox) and inbox.offered == 1
        assert inbox.messages == []
    assert issubclass(smtplib.SMTPDataError, smtplib.SMTPResponseException)


class GrumpyGoodbye(Inbox):
    """Takes every message (250), then answers QUIT with a 4xx."""

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        return "421 4.7.0 closing connection"


def test_a_message_the_server_took_is_sent_once_whatever_its_goodbye_says(
    app: Flask, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = app.extensions["portal.clock"]
    with smtp_server(app, monkeypatch, handler=GrumpyGoodbye()) as inbox:
        work_id = _ask(app, db, SEND_MAIL, "ap@acme.test", "Receipt", "Paid")
        assert _run(app, work_id).startswith(f"<work-{work_id}.")
        for delay in outbox.RETRY_DELAYS:
            clock.advance(delay)
            assert app.extensions["portal.jobs"].run_due() == 0
        assert len(inbox.messages) == 1
        assert _row(db, work_id).state is WorkState.DONE


class NoSuchRecipient(Inbox):
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        return "550 5.1.1 no such user"


def test_a_recipient_refused_for_good_is_not_asked_again(
    app: Flask, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server(app, monkeypatch, handler=NoSuchRecipient()) as inbox:
        work_id = _ask(app, db, SEND_MAIL, "gone@acme.test", "Receipt", "Paid")
        assert _run(app, work_id).startswith("failed: SMTPRecipientsRefused")
        row = _row(db, work_id)
        assert (row.state, row.attempts) == (WorkState.FAILED, 1)  # never sent: not "sending"
        assert inbox.messages == []


# any order of deliveries, crashes and recoveries -------------------------------------------

STEPS = st.lists(
    st.sampled_from(["deliver", "deliver again", "die after the effect", "recover", "dispatch"]),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_duplicates_never_rerun_work_and_each_death_reruns_it_once(
    app: Flask, steps: list[str]
) -> None:
    """Whatever mix of duplicate deliveries, dispatcher passes, recoveries and processes that
    die after the side effect (before recording the end): the work ends done, a duplicate never
    runs it again, and each death costs exactly one rerun (which a job that looks before it acts,
    as every job of the portal does, turns into no second effect)."""
    with transactional(app):
        outbox_jobs.done.clear()
        clock = app.extensions["portal.clock"]
        db: Session = app.extensions["portal.db"].sessionmaker()
        work_id = _ask(app, db, COUNT, "k")
        deaths = 0
        for step in steps:
            if step in ("deliver", "deliver again"):
                _run(app, work_id)
            elif step == "die after the effect":
                held = outbox.claim(db, work_id, "a-host-gone:1", clock.now())
                db.commit()
                if held is not None:
                    outbox_jobs.count("k")  # the effect; then the process is gone
                    deaths += 1
            elif step == "recover":
                clock.advance(outbox.LEASE * 2)
                outbox.recover(db, clock.now(), dispatch.alive)
                db.commit()
            else:
                app.extensions["portal.jobs"].run_due()
        clock.advance(outbox.LEASE * 2)
        outbox.recover(db, clock.now(), dispatch.alive)
        db.commit()
        app.extensions["portal.jobs"].run_due()
        assert _row(db, work_id).state is WorkState.DONE
        assert outbox_jobs.done["k"] == 1 + deaths
        db.close()
