"""The dispatcher's recurring jobs: the first pass runs the sweep and moves its schedule on; the
passes after it, before the schedule's time, run nothing."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import Schedule
from portal.runtime import SWEEP_EVERY
from tests.work import ManualQueue
from workers.dispatch import Dispatcher


def test_the_sweep_runs_on_the_first_pass_and_again_once_its_time_comes(
    app: Flask, db: Session
) -> None:
    clock = app.extensions["portal.clock"]
    queue = ManualQueue(app)
    dispatcher = Dispatcher(app, queue)  # type: ignore[arg-type]
    now = clock.now()
    assert dispatcher.tick().scheduled == ["sweep"]
    assert [(job, job_id) for job, _args, job_id in queue.handed] == [
        ("sweep", f"sweep-{int(now.timestamp())}")
    ]
    (next_run,) = db.scalars(select(Schedule.next_run_at).where(Schedule.name == "sweep"))
    assert next_run - now >= SWEEP_EVERY - timedelta(seconds=1)
    assert dispatcher.tick().scheduled == []  # not yet its time
    clock.advance(SWEEP_EVERY)
    assert dispatcher.tick().scheduled == ["sweep"]
    assert [job for job, _args, _id in queue.handed] == ["sweep", "sweep"]
