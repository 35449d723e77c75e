"""The dispatcher: from the outbox (the database) to Redis, and back when Redis forgets.

It runs inside every worker (workers/worker.py): once as the worker starts, then about once a
second (between jobs, or after a second with none). Each pass:

1. gives back the rows whose process died while holding them (`outbox.recover`): a worker killed
   mid-job is rerun at once, not after RQ's maintenance interval;
2. runs the recurring jobs whose time has come (`job_schedules`: whichever worker moves a
   schedule on first queues it, so the sweep needs no job in Redis to come back);
3. hands to Redis the pending rows whose time has come;
4. asks Redis about rows handed over more than LOST_AFTER ago: a row whose RQ job Redis no
   longer has (restarted empty, flushed, failed before the job could start) is handed over again.

Passes only read unless there is something to change, so an idle worker does not take SQLite's
write lock. Several workers may dispatch at once: every change is conditional on the row's
state, and a row handed over twice still runs once (`outbox.claim`).

`drain` runs due work right here instead, without Redis: tests, and `flask jobs drain` for an
operator whose Redis is gone.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import Flask
from rq.exceptions import StopRequested
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import clock
from portal.db import unit_of_work
from portal.models import Schedule, Work, WorkState
from portal.runtime import RUN_WORK, SCHEDULES
from portal.services import outbox
from workers.jobs import NOT_RUN, pid_namespace, run_work
from workers.queue import RQJobQueue

log = logging.getLogger(__name__)

LOST_AFTER = timedelta(seconds=10)  # Redis shows a handed-over job by then, or it lost it
# A handed-over job still waiting after this long is handed over again whatever Redis says of it
# (longer than a healthy queue keeps work waiting; a duplicate runs once anyway).
STUCK_AFTER = timedelta(minutes=2)
# RQ statuses of a job that is still on its way: anything else (gone, failed, stopped, finished
# while the row says queued) means the hand-off must be made again.
ON_ITS_WAY = frozenset({"created", "queued", "started", "deferred", "scheduled", "rate_limited"})


def alive(by: str) -> bool | None:
    """Whether the process that claimed work ("host:pid-namespace:pid", workers.jobs.
    worker_identity) still runs; None when this process cannot look (another host or pid
    namespace): then the claim's lease decides."""
    parts = by.rsplit(":", 2)
    if len(parts) != 3:
        return None
    host, namespace, pid = parts
    if host != platform.node() or namespace != pid_namespace() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


@dataclass
class Pass:
    """What one pass saw and did (logged when it did anything)."""

    recovered: int = 0
    scheduled: list[str] = field(default_factory=list)
    handed_over: int = 0
    handed_again: int = 0

    def __bool__(self) -> bool:
        return bool(self.recovered or self.scheduled or self.handed_over or self.handed_again)


class Dispatcher:
    def __init__(self, app: Flask, queue: RQJobQueue) -> None:
        self.app = app
        self.queue = queue

    def _session(self) -> Session:
        session: Session = self.app.extensions["portal.db"].sessionmaker()
        return session

    def tick(self) -> Pass:
        """One pass (see the module's docstring); errors go to the log, the next pass retries."""
        done = Pass()
        with self.app.app_context():
            now = clock.now()
            for step in (self._recover, self._schedules, self._due, self._lost):
                try:
                    step(now, done)
                except StopRequested:
                    raise  # SIGINT/SIGTERM during a pass: the worker stops, as RQ means it to
                except Exception as error:
                    log.warning(
                        "dispatcher: %s: %s: %s", step.__name__, type(error).__name__, error
                    )
        if done:
            log.info("dispatcher: %s", done)
        return done

    def _recover(self, now: datetime, done: Pass) -> None:
        with unit_of_work(writes=False), self._session() as session:
            held = session.execute(
                select(Work.claimed_by, Work.claimed_at).where(
                    Work.state.in_((WorkState.RUNNING, WorkState.SENDING))
                )
            ).all()
        if not any(
            alive(by or "") is False or (claimed_at or now) < now - outbox.LEASE
            for by, claimed_at in held
        ):  # the same test as outbox.recover's, read first so an idle pass writes nothing
            return
        with unit_of_work(writes=True), self._session() as session:
            counts = outbox.recover(session, now, alive)
            session.commit()
        done.recovered = sum(counts.values())
        if counts["unconfirmed"]:
            log.warning(
                "dispatcher: %d mail(s) ended unconfirmed: their worker died while sending "
                "(never sent twice)",
                counts["unconfirmed"],
            )

    def _schedules(self, now: datetime, done: Pass) -> None:
        with unit_of_work(writes=False), self._session() as session:
            known = dict(session.execute(select(Schedule.name, Schedule.next_run_at)).all())
        for name, (every, job) in SCHEDULES.items():
            if name in known and known[name] > now:
                continue
            with unit_of_work(writes=True), self._session() as session:
                ours = outbox.claim_schedule(session, name, every, now)
                session.commit()
            if ours:
                self.queue.enqueue(job, job_id=f"{name}-{int(now.timestamp())}")
                done.scheduled.append(name)

    def _due(self, now: datetime, done: Pass) -> None:
        with unit_of_work(writes=False), self._session() as session:
            ids = outbox.due(session, now)
        if ids:
            self._hand_over(ids, now, done)

    def _lost(self, now: datetime, done: Pass) -> None:
        with unit_of_work(writes=False), self._session() as session:
            waiting = outbox.handed_over_before(session, now - LOST_AFTER)
            handed = [(w.id, w.rq_job_id, w.dispatched, w.dispatched_at) for w in waiting]
        if not handed:
            return
        statuses = self.queue.statuses([rq_id for _id, rq_id, _n, _at in handed])
        lost = [
            (work_id, dispatched)
            for (work_id, _rq, dispatched, at), status in zip(handed, statuses, strict=True)
            # Gone from Redis, or "on its way" for too long: a job RQ took off its list for a
            # worker that died (its intermediate queue), or whose list was lost, says "queued"
            # until RQ's maintenance, minutes later. A second hand-off runs it once anyway.
            if status not in ON_ITS_WAY or (at is not None and at < now - STUCK_AFTER)
        ]
        if lost:
            log.warning(
                "dispatcher: %d handed-over job(s) lost or stuck in Redis: handing them over again",
                len(lost),
            )
            self._hand_over([i for i, _n in lost], now, done, again=dict(lost))

    def _hand_over(
        self, ids: list[int], now: datetime, done: Pass, *, again: dict[int, int] | None = None
    ) -> None:
        with unit_of_work(writes=True), self._session() as session:
            handed = [
                (i, outbox.hand_over(session, i, now, again_after=(again or {}).get(i)))
                for i in ids
            ]
            session.commit()
        for work_id, rq_job_id in handed:
            if rq_job_id is None:
                continue  # another dispatcher got there first, or the row moved on
            # Recorded first, then queued: should this fail, the row is already "queued" and
            # the next passes find Redis without it and hand it over again.
            self.queue.enqueue(RUN_WORK, work_id, job_id=rq_job_id)
            if again:
                done.handed_again += 1
            else:
                done.handed_over += 1


def drain(app: Flask, now: datetime | None = None, rounds: int = 20) -> int:
    """Run here, without Redis, every row of the outbox that is due by `now` (the app's clock
    if None) or handed over, until none is left (work may ask for more work). How many ran."""
    ran = 0
    with app.app_context():
        for _ in range(rounds):
            moment = now or clock.now()
            with unit_of_work(writes=False), app.extensions["portal.db"].sessionmaker() as session:
                ids = outbox.due(session, moment, limit=1000)
            if ids:  # as the dispatcher would hand them over (a claim takes queued work)
                with (
                    unit_of_work(writes=True),
                    app.extensions["portal.db"].sessionmaker() as session,
                ):
                    for work_id in ids:
                        outbox.hand_over(session, work_id, moment)
                    session.commit()
            with unit_of_work(writes=False), app.extensions["portal.db"].sessionmaker() as session:
                ids = list(
                    session.scalars(
                        select(Work.id)
                        .where(Work.state == WorkState.QUEUED)
                        .order_by(Work.run_after, Work.id)
                    )
                )
            if not ids:
                break
            outcomes = [run_work(work_id) for work_id in ids]
            taken = sum(1 for outcome in outcomes if not outcome.startswith(NOT_RUN))
            if not taken:
                break  # what is left is held by another process
            ran += taken
    return ran
