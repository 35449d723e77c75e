"""The dispatcher's recurring jobs: the first pass runs each (the sweep, the reminders, the
monthly statements) and moves its schedule on; the passes after it, before a schedule's time,
run nothing; each comes back at its own pace, and after Redis forgot everything (the schedules
are in the database, not in Redis)."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import Schedule
from portal.runtime import REMIND_EVERY, SCHEDULES, SWEEP_EVERY
from tests.work import ManualQueue
from workers.dispatch import Dispatcher
from workers.queue import job_name

EVERY_HOUR = [
    "sweep",
    "reminders",
    "monthly_statements",
    "card_expiry",
    "autopay",
    "security_digests",
]


def test_the_sweep_runs_on_the_first_pass_and_again_once_its_time_comes(
    app: Flask, db: Session
) -> None:
    clock = app.extensions["portal.clock"]
    queue = ManualQueue(app)
    dispatcher = Dispatcher(app, queue)  # type: ignore[arg-type]
    now = clock.now()
    assert dispatcher.tick().scheduled == EVERY_HOUR
    assert [(job, job_id) for job, _args, job_id in queue.handed] == [
        (job_name(SCHEDULES[name][1]), f"{name}-{int(now.timestamp())}") for name in EVERY_HOUR
    ]
    (next_run,) = db.scalars(select(Schedule.next_run_at).where(Schedule.name == "sweep"))
    assert next_run - now >= SWEEP_EVERY - timedelta(seconds=1)
    assert dispatcher.tick().scheduled == []  # not yet its time
    clock.advance(SWEEP_EVERY)
    assert dispatcher.tick().scheduled == ["sweep"]
    assert [job.rpartition(".")[2] for job, _args, _id in queue.handed] == [
        "sweep",
        "send_reminders",
        "send_monthly_statements",
        "send_card_expiry_notices",
        "run_autopay",
        "send_security_digests",
        "sweep",
    ]


def test_the_reminders_come_back_hourly_even_after_redis_forgot_everything(
    app: Flask, db: Session
) -> None:
    clock = app.extensions["portal.clock"]
    assert Dispatcher(app, ManualQueue(app)).tick().scheduled == EVERY_HOUR  # type: ignore[arg-type]
    clock.advance(REMIND_EVERY - timedelta(minutes=1))
    emptied = ManualQueue(app)  # Redis restarted empty: nothing of the earlier runs in it
    dispatcher = Dispatcher(app, emptied)  # type: ignore[arg-type]
    assert dispatcher.tick().scheduled == ["sweep"]  # the reminders: not yet their hour
    clock.advance(timedelta(minutes=1))
    assert dispatcher.tick().scheduled == EVERY_HOUR
    assert [job.rpartition(".")[2] for job, _args, _id in emptied.handed][-5:] == [
        "send_reminders",
        "send_monthly_statements",
        "send_card_expiry_notices",
        "run_autopay",
        "send_security_digests",
    ]
    assert dispatcher.tick().scheduled == []
