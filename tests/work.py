"""The tests' transport for background work: remembers what it is handed and runs nothing until
a test says so. The work itself is the outbox's (in the test's transaction, rolled back with
it); `run_due` runs it through the worker's own `run_work`, here, as `flask jobs drain` does."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import delete

from portal import clock
from portal.models import UNFINISHED, Schedule, Work
from portal.runtime import SCHEDULES
from portal.services import outbox
from workers.dispatch import drain
from workers.queue import Job, job_name


class ManualQueue:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.handed: list[tuple[str, tuple[Any, ...], str | None]] = []

    def enqueue(self, func: Job, *args: Any, job_id: str | None = None) -> None:
        self.handed.append((job_name(func), args, job_id))

    def pending(self) -> list[tuple[datetime, str]]:
        """The outbox's unfinished work: (when, job name), by time."""
        with self.app.app_context(), self.app.extensions["portal.db"].sessionmaker() as session:
            return [(row.run_after, job_name(row.job)) for row in outbox.unfinished(session)]

    def run_due(self, now: datetime | None = None) -> int:
        """Run every piece of work due by `now` (and what it asks for in turn); how many ran."""
        return drain(self.app, now)

    def clear(self) -> None:
        """Forget every unfinished piece of work (e.g. a webhook that never arrives)."""
        self.handed.clear()
        with self.app.app_context(), self.app.extensions["portal.db"].sessionmaker() as session:
            session.execute(delete(Work).where(Work.state.in_(UNFINISHED)))
            session.commit()


def hold_recurring(app: Flask, *, but: tuple[str, ...] = ("sweep",)) -> None:
    """The recurring jobs other than `but` ran a moment ago and are not due for a week (their
    `job_schedules` rows, committed): a test of something else sees no work of theirs (the
    reminders and the monthly statements have tests of their own, tests/jobs/test_reminders.py)."""
    with app.app_context(), app.extensions["portal.db"].sessionmaker() as session:
        later = clock.now() + timedelta(days=7)
        for name in SCHEDULES:
            if name in but:
                continue
            row = session.get(Schedule, name)
            if row is None:
                session.add(Schedule(name=name, next_run_at=later))
            else:
                row.next_run_at = later
        session.commit()
