"""The worker: `flask --app wsgi jobs worker` (what `make worker` and `make run` start).

One process per worker, the app built once in it before any job: RQ's forking worker then runs
each job in a child that inherits the built app (a fork, not an import and a `create_app` per
job; the child drops the database connections it inherited and opens its own). As it starts,
then about once a second (between jobs, or after a second with none), the worker runs the
dispatcher (workers/dispatch.py), which hands work from
the outbox to Redis, reruns work whose process died, and runs the recurring sweep: no RQ
scheduler, so no scheduler process to die and no scheduler lock to outlive a killed worker.

Should RQ's loop end on a Redis error (a paused Redis times out; RQ gives up on that), the
worker starts a new one after a pause; a Redis that went away and came back empty is found
within a few seconds (RQ's reconnection waits at most MAX_RECONNECT_WAIT).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Flask
from rq import Queue, Worker
from rq.exceptions import StopRequested
from rq.job import Job

from portal import metrics
from workers import jobs
from workers.dispatch import Dispatcher
from workers.queue import QUEUE_NAME, RQJobQueue, connect

log = logging.getLogger(__name__)

TICK = 1  # seconds between two dispatcher passes while idle
MAX_RECONNECT_WAIT = 5.0  # seconds, at most, between two attempts to reach Redis again
RESTART_PAUSE = 2.0  # seconds before RQ's loop starts again after it gave up
DISPATCH_TIMEOUT = 5.0  # seconds the dispatcher waits for Redis in one call


class PortalWorker(Worker):
    """RQ's forking worker, with the app built before any fork and the dispatcher between jobs."""

    max_connection_wait_time = MAX_RECONNECT_WAIT

    def __init__(self, *args: Any, app: Flask, dispatcher: Dispatcher, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = app
        self.dispatcher = dispatcher
        self._dispatched_at = float("-inf")

    def _dispatch(self, *, now: bool = False) -> None:
        """A dispatcher pass, at most once a TICK while jobs keep coming (`now`: whatever)."""
        if now or time.monotonic() - self._dispatched_at >= TICK:
            self._dispatched_at = time.monotonic()
            self.dispatcher.tick()

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        if timeout is None:  # burst: what is due now, then stop
            self._dispatch()
            found = super().dequeue_job_and_maintain_ttl(None, max_idle_time)
            if found is None:
                self._dispatch(now=True)  # a job may have asked for more work
                found = super().dequeue_job_and_maintain_ttl(None, max_idle_time)
            return found
        while True:
            self._dispatch()
            found = super().dequeue_job_and_maintain_ttl(TICK, TICK)
            if found is not None or self.stopping:
                return found

    @property
    def stopping(self) -> bool:
        """Told to stop (SIGINT/SIGTERM). RQ marks it two ways: `_stop_requested` when busy,
        and only the shutdown date when idle (it raises StopRequested then)."""
        return self._stop_requested or self._shutdown_requested_date is not None

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        finally:
            # The child is gone: its live gauges (the pool's) with it; its counts stay.
            metrics.process_ended(metrics.horse_name(os.getpid()))

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        # The child of a fork: the parent's pooled connections are the parent's (SQLAlchemy's
        # recipe for forked processes: forget them here without closing them).
        self.app.extensions["portal.db"].engine.dispose(close=False)
        # Its metrics go to its worker's one set of files for jobs, not to a set per child.
        metrics.act_as(metrics.horse_name(os.getppid()))
        super().main_work_horse(job, queue)


def serve(app: Flask, *, burst: bool = False, name: str | None = None) -> None:
    """Run the worker until it is told to stop (SIGINT/SIGTERM), or in `burst` until nothing is
    due. The app is this process's, built once; jobs (workers/jobs.py) use it."""
    redis_url = app.config["SETTINGS"].redis_url
    if not redis_url:
        raise RuntimeError("REDIS_URL is not set: a worker needs Redis (`make run` starts one)")
    jobs.use_app(app)
    dispatcher = Dispatcher(app, RQJobQueue(redis_url, timeout=DISPATCH_TIMEOUT))
    try:
        _serve(app, dispatcher, redis_url, burst=burst, name=name)
    finally:
        metrics.process_ended(os.getpid())


def _serve(
    app: Flask, dispatcher: Dispatcher, redis_url: str, *, burst: bool, name: str | None
) -> None:
    while True:
        worker: PortalWorker | None = None
        try:
            worker = PortalWorker(
                [QUEUE_NAME],
                connection=connect(redis_url),
                app=app,
                dispatcher=dispatcher,
                name=name,
            )
            worker.work(burst=burst, with_scheduler=False, logging_level="INFO")
        except Exception as error:  # e.g. Redis away as the worker registers itself
            log.warning("worker: %s: %s", type(error).__name__, error)
        if burst or (worker is not None and worker.stopping):
            return
        log.warning("worker: RQ's loop ended; starting it again in %.0f s", RESTART_PAUSE)
        try:
            time.sleep(RESTART_PAUSE)
        except StopRequested:  # SIGINT/SIGTERM while pausing (RQ's handler is still set)
            return
        if worker is not None and worker.stopping:
            return
