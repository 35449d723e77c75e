"""Where jobs travel: RQ on Redis (REDIS_URL), the one path in development, tests and
production. The work itself is a row of the outbox (portal/services/outbox.py); Redis carries
only its id to a worker, so Redis losing it (a restart, a flush) loses nothing: the dispatcher
(workers/dispatch.py) hands it over again. Without REDIS_URL nothing travels (`Unqueued`) and
work waits in the outbox until a worker with Redis runs it.
Enqueue through `defer(session, …)` so a job never starts before the commit that made its rows.

Jobs are named by their dotted path ("workers.jobs.run_work"): RQ takes the string as it is. So
nothing under portal/ imports workers.jobs, and this module (infrastructure below the portal)
imports nothing from it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry
from rq import Queue
from rq.job import Job as RQJob
from sqlalchemy import event
from sqlalchemy.orm import Session

QUEUE_NAME = "portal"
log = logging.getLogger(__name__)


Job = Callable[..., Any] | str  # a function, or its dotted name


def resolve(job: Job) -> Callable[..., Any]:
    """The function a job names ("package.module.function"), imported when it runs."""
    if not isinstance(job, str):
        return job
    module, _, name = job.rpartition(".")
    func: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return func


def job_name(job: Job) -> str:
    """A job's short name, for logs and `pending()`: "send_payment_result"."""
    return job.rpartition(".")[2] if isinstance(job, str) else job.__name__


# How long the web process waits for Redis in one call (connecting, or an answer), without
# retrying: a stopped or paused Redis costs a request a fraction of a second, and the caller
# falls back (rate limits to memory, a hand-off to this process), instead of hanging.
WEB_TIMEOUT = 0.3


def client_options(timeout: float) -> dict[str, Any]:
    """Options for a Redis client that gives up after `timeout` seconds and never retries."""
    return {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": RedisRetry(NoBackoff(), 0),
    }


def connect(redis_url: str, timeout: float | None = None) -> Redis:
    """A client for `redis_url`; with `timeout`, one that gives up after it (`client_options`).
    The worker's own connection (`rq worker --url`) waits on the queue and takes none."""
    return Redis.from_url(redis_url, **(client_options(timeout) if timeout else {}))


def get_queue(redis_url: str, timeout: float | None = None) -> Queue:
    return Queue(QUEUE_NAME, connection=connect(redis_url, timeout), default_timeout=300)


class JobQueue(Protocol):
    def enqueue(self, func: Job, *args: Any, job_id: str | None = None) -> None: ...


class QueueUnavailable(RuntimeError):
    """Nothing carries work to a worker from here (no REDIS_URL)."""


class RQJobQueue:
    """RQ's queue `portal`. No RQ retries and no RQ scheduler: when to run and run again is the
    outbox's (a row's `run_after`), so nothing depends on what Redis keeps. With `timeout`,
    enqueueing raises after that long when Redis does not answer (see WEB_TIMEOUT)."""

    def __init__(self, redis_url: str, timeout: float | None = None) -> None:
        self.queue = get_queue(redis_url, timeout)

    def enqueue(self, func: Job, *args: Any, job_id: str | None = None) -> None:
        if isinstance(func, str):  # RQ imports a dotted name in the worker
            self.queue.enqueue(func, *args, job_id=job_id)
        else:
            self.queue.enqueue(func, *args, job_id=job_id)

    def close(self) -> None:
        """Let go of its connections to Redis (an app that is done with, a test's)."""
        self.queue.connection.close()

    def statuses(self, job_ids: list[str]) -> list[str | None]:
        """Each job's RQ status ("queued", "started", …), None for a job Redis does not have."""
        jobs = RQJob.fetch_many(job_ids, connection=self.queue.connection)
        found = [None if job is None else job.get_status(refresh=False) for job in jobs]
        return [None if status is None else status.value for status in found]


class Unqueued:
    """No REDIS_URL: work is written to the outbox and waits there for a worker."""

    def enqueue(self, func: Job, *args: Any, job_id: str | None = None) -> None:
        raise QueueUnavailable("REDIS_URL is not set: the work waits in the outbox")


# after-commit hand-off ----------------------------------------------------------------------

_AFTER_COMMIT = "portal.after_commit"


def defer(session: Session, action: Callable[[], Any]) -> None:
    """Run `action` (typically an enqueue) once this session's transaction has committed."""
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_deferred(session: Session) -> None:
    # A savepoint's release fires this too: its work is not committed until the outer one is.
    if session.in_nested_transaction():
        return
    # What was committed stands: a failing hand-off must not turn it into an error page, nor
    # stop the others (the work is in the outbox: the dispatcher hands it over later).
    actions = session.info.pop(_AFTER_COMMIT, [])
    for action in actions:
        try:
            action()
        except Exception:
            log.exception("could not hand a job to the queue after a commit")


@event.listens_for(Session, "after_soft_rollback")
def _drop_deferred(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:  # the outermost transaction rolled back
        session.info.pop(_AFTER_COMMIT, None)
