"""Where jobs go: RQ on Redis when REDIS_URL is set, otherwise an embedded queue in-process.

The embedded queue is what `make run` uses: the same job functions, run on one background
thread of the web process, at their due time. The thread starts when the app first serves a
request (never in `flask db upgrade` or `seed`), and runs nothing until the database schema is
current. Tests drive it by hand with `run_due(now)`.
Enqueue through `defer(session, …)` so a job never starts before the commit that made its rows.

Jobs are named by their dotted path ("workers.jobs.send_payment_result"): RQ takes the string as
it is, the embedded queue imports it when the job runs (`resolve`). So nothing under portal/
imports workers.jobs, and this module (infrastructure below the portal) imports nothing from it.
"""

from __future__ import annotations

import functools
import heapq
import importlib
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry
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

    def enqueue_at(
        self, when: datetime, func: Job, *args: Any, job_id: str | None = None
    ) -> None: ...


class RQJobQueue:
    """Jobs retry three times (10 s, 1 min, 5 min apart) before RQ marks them failed. With
    `timeout`, enqueueing raises after that long when Redis does not answer (see WEB_TIMEOUT)."""

    def __init__(self, redis_url: str, timeout: float | None = None) -> None:
        self.queue = get_queue(redis_url, timeout)

    def enqueue(self, func: Job, *args: Any, job_id: str | None = None) -> None:
        retry = Retry(max=3, interval=[10, 60, 300])
        if isinstance(func, str):  # RQ imports a dotted name in the worker
            self.queue.enqueue(func, *args, job_id=job_id, retry=retry)
        else:
            self.queue.enqueue(func, *args, job_id=job_id, retry=retry)

    def enqueue_at(self, when: datetime, func: Job, *args: Any, job_id: str | None = None) -> None:
        retry = Retry(max=3, interval=[10, 60, 300])
        if isinstance(func, str):
            self.queue.enqueue_at(when, func, *args, job_id=job_id, retry=retry)
        else:
            self.queue.enqueue_at(when, func, *args, job_id=job_id, retry=retry)


@dataclass(order=True)
class _Entry:
    when: datetime
    seq: int
    func: Job = field(compare=False)
    args: tuple[Any, ...] = field(compare=False)
    attempts: int = field(default=0, compare=False)


class EmbeddedQueue:
    """A due-time heap run by one daemon thread (or by hand in tests)."""

    RETRY_DELAYS = (timedelta(seconds=10), timedelta(minutes=1), timedelta(minutes=5))
    READY_POLL = 5.0  # seconds between two looks at whether the jobs may start

    def __init__(
        self,
        run: Callable[[Callable[[], Any]], Any],
        ready: Callable[[], bool] | None = None,
        not_ready_message: str = "background jobs are waiting",
    ) -> None:
        # `run` wraps each job, e.g. in an app context; the thread runs nothing until
        # `ready()` is true (the schema is current), saying `not_ready_message` once meanwhile.
        self._run = run
        self._ready = ready
        self._not_ready_message = not_ready_message
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.periodic: list[tuple[timedelta, Job]] = []

    def enqueue(self, func: Job, *args: Any, job_id: str | None = None) -> None:
        self.enqueue_at(datetime.now(UTC), func, *args, job_id=job_id)

    def enqueue_at(self, when: datetime, func: Job, *args: Any, job_id: str | None = None) -> None:
        with self._wake:
            heapq.heappush(self._heap, _Entry(when, next(self._seq), func, args))
            self._wake.notify()

    def clear(self) -> None:
        with self._wake:
            self._heap.clear()

    def pending(self) -> list[tuple[datetime, str]]:
        with self._wake:
            return sorted((e.when, job_name(e.func)) for e in self._heap)

    def run_due(self, now: datetime) -> int:
        """Run every job due at `now` (and what those enqueue for `now`); returns how many."""
        ran = 0
        while True:
            with self._wake:
                if not self._heap or self._heap[0].when > now:
                    return ran
                entry = heapq.heappop(self._heap)
            ran += 1
            try:
                self._run(functools.partial(resolve(entry.func), *entry.args))
            except Exception:
                log.exception(
                    "job %s failed (attempt %d)", job_name(entry.func), entry.attempts + 1
                )
                if entry.attempts < len(self.RETRY_DELAYS):
                    entry.when = now + self.RETRY_DELAYS[entry.attempts]
                    entry.attempts += 1
                    with self._wake:
                        heapq.heappush(self._heap, entry)

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the thread (once, whoever calls first)."""
        with self._wake:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="portal-jobs", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread after the job it is running, if any (tests; a clean shutdown)."""
        with self._wake:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._wake.notify_all()
        if thread is not None:
            thread.join(timeout)

    def _wait_until_ready(self) -> bool:
        """False if stopped before the jobs could start."""
        said = False
        while not self._stopping:
            try:
                ready = self._ready is None or self._ready()
            except Exception as error:  # e.g. no database file yet: not ready either
                log.debug("readiness check failed: %s", error)
                ready = False
            if ready:
                if said:
                    log.info("background jobs start now")
                return True
            if not said:
                log.warning(self._not_ready_message)
                said = True
            with self._wake:
                if not self._stopping:
                    self._wake.wait(self.READY_POLL)
        return False

    def _loop(self) -> None:
        if not self._wait_until_ready():
            return
        last: dict[int, datetime] = {}
        while not self._stopping:
            now = datetime.now(UTC)
            for index, (every, func) in enumerate(self.periodic):
                if now - last.get(index, datetime.min.replace(tzinfo=UTC)) >= every:
                    last[index] = now
                    self.enqueue_at(now, func)
            self.run_due(now)
            with self._wake:
                timeout = 1.0
                if self._heap:
                    timeout = max(0.05, min(1.0, (self._heap[0].when - now).total_seconds()))
                if not self._stopping:
                    self._wake.wait(timeout)


# after-commit hand-off ----------------------------------------------------------------------

_AFTER_COMMIT = "portal.after_commit"


def defer(session: Session, action: Callable[[], Any]) -> None:
    """Run `action` (typically an enqueue) once this session's transaction has committed."""
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_deferred(session: Session) -> None:
    # What was committed stands: a failing hand-off must not turn it into an error page, nor
    # stop the others. (Mail runs in-process when the queue refuses it: Runtime.hand_off;
    # the sweep picks up scheduled and stuck payments whatever happened to their jobs.)
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
