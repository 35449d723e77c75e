"""The portal's Prometheus metrics: every metric object, in one place, recorded where things
happen (a request's end, a sign-in, a payment's outcome, a PDF, a statement, a job).

With PROMETHEUS_MULTIPROC_DIR set (gunicorn's workers and the job workers of a host, each
process writing its own files there), `/metrics` sums what every process recorded
(prometheus_client's MultiProcessCollector): counters and histograms of processes that ended
stay counted, the database pool's gauges count live processes only. Without it (development,
tests) each process reports its own. The directory must be set before this module is first
imported; as a server starts the files of processes no longer running are removed
(`forget_the_dead`, called by gunicorn.conf.py and by each job worker as it starts).

Labels stay few: endpoint names (never paths; "unmatched" when no route matched;
"switched_off" for a 503 that a rollout flag answered, portal/flags.py), methods,
statuses, outcomes, gateways, formats and job names, all from fixed sets.

What is read at scrape time (queue depth, the outbox's age) is collected by
`portal.blueprints.health`, not here: this module sits below everything and imports nothing of
the portal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Whose files a process writes in multiprocess mode: its pid, except in the children RQ forks
# for jobs, which one after another share a name taken from their worker (`act_as`). A child
# per job would otherwise leave files of its own behind, one per job, for every scrape to read.
_acting: tuple[int, str] | None = None


def _identity() -> str:
    pid = os.getpid()
    if _acting is not None and _acting[0] == pid:
        return _acting[1]
    return str(pid)


def act_as(name: str) -> None:
    """From now on this process writes its metrics under `name` (no "_" in it): for a process
    that never runs beside another of the same name, and whose live gauges the one that
    started it drops when it ends (`process_ended(name)`)."""
    global _acting
    _acting = (os.getpid(), name)


def horse_name(worker_pid: int) -> str:
    """The name a job worker's children write under: one set of files per worker."""
    return f"{worker_pid}job"


if os.environ.get(MULTIPROC_ENV):
    values.ValueClass = values.MultiProcessValue(process_identifier=_identity)  # type: ignore[no-untyped-call]

# No `*_created` series: one line per series is enough (and the multiprocess mode has none).
disable_created_metrics()  # type: ignore[no-untyped-call]

# This process's own registry (the metric objects below). In multiprocess mode their values
# live in files, and the scrape reads the files of every process instead.
REGISTRY = CollectorRegistry(auto_describe=True)

# The runbook's budgets: first byte in 70 ms, the dashboard in under a second.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.07, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# An invoice PDF: under 3 s wanted, over 5 s alerts.
PDF_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
STATEMENT_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

http_requests = Counter(
    "portal_http_requests",
    "HTTP requests by endpoint, method and status.",
    ("endpoint", "method", "status"),
    registry=REGISTRY,
)
http_duration = Histogram(
    "portal_http_request_duration_seconds",
    "Time from a request's first hook to its response, by endpoint and method.",
    ("endpoint", "method"),
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)
sign_ins = Counter(
    "portal_sign_ins",
    "Password steps of a sign-in (page and API) by outcome: ok, invalid, locked, disabled.",
    ("outcome",),
    registry=REGISTRY,
)
mfa_failures = Counter(
    "portal_mfa_failures",
    "Second-factor codes refused at sign-in, by outcome: invalid, locked.",
    ("outcome",),
    registry=REGISTRY,
)
payments = Counter(
    "portal_payments",
    "Payment outcomes by gateway: succeeded and failed once per payment; processing and "
    "requires_action when the gateway first says so.",
    ("gateway", "outcome"),
    registry=REGISTRY,
)
invoice_pdf = Histogram(
    "portal_invoice_pdf_seconds",
    "Time to generate an invoice PDF (a cache miss), by outcome: ok, error.",
    ("outcome",),
    buckets=PDF_BUCKETS,
    registry=REGISTRY,
)
statements = Histogram(
    "portal_statement_seconds",
    "Time to render a statement, by format (pdf, xlsx, csv) and outcome: ok, error.",
    ("format", "outcome"),
    buckets=STATEMENT_BUCKETS,
    registry=REGISTRY,
)
jobs = Histogram(
    "portal_job_duration_seconds",
    "Time a worker spent running a piece of background work, by job and outcome: done, "
    "unconfirmed, failed.",
    ("job", "outcome"),
    buckets=JOB_BUCKETS,
    registry=REGISTRY,
)
pool_checked_out = Gauge(
    "portal_db_pool_checked_out",
    "Database connections in use (summed over live processes).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
pool_size = Gauge(
    "portal_db_pool_size",
    "Database pool size (summed over live processes; 0 where the pool has no fixed size).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
pool_overflow = Gauge(
    "portal_db_pool_overflow",
    "Database connections open beyond the pool size (summed over live processes).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def process_ended(pid: int | str) -> None:
    """A process that wrote here has ended: its live gauges go, its counters and histograms stay
    (gunicorn.conf.py's child_exit does the same for web workers)."""
    directory = multiprocess_dir()
    if directory:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def forget_the_dead(directory: str | None = None) -> int:
    """Remove the files of processes that no longer run (a server starting on this host: what a
    killed worker left would otherwise be summed for ever, its pool gauges included), and keep
    those of processes still running (the job workers beside a restarting gunicorn keep their
    figures). A file is `<kind>_<pid>.db`, or `<kind>_<pid>job.db` for a worker's jobs. Returns
    how many files went."""
    directory = directory or multiprocess_dir()
    if not directory:
        return 0
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    removed = 0
    for entry in path.glob("*.db"):
        owner = entry.stem.rpartition("_")[2].removesuffix("job")
        if owner.isdigit() and _alive(int(owner)):
            continue
        entry.unlink(missing_ok=True)
        removed += 1
    return removed


@contextmanager
def timed(histogram: Histogram, **labels: str) -> Iterator[None]:
    """Observe how long the block took, with `outcome` "ok" or, when it raises, "error"."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        histogram.labels(outcome=outcome, **labels).observe(time.perf_counter() - started)


def watch_pool(engine: Engine) -> None:
    """Keep the pool gauges up to date as connections are checked out and in (the engine's
    current pool: a forked job's child replaces it)."""

    def _number(name: str) -> float:
        measure: Callable[[], Any] | None = getattr(engine.pool, name, None)
        try:
            return float(measure()) if measure is not None else 0.0
        except (TypeError, NotImplementedError):  # a pool without that notion (SQLite's)
            return 0.0

    def update(*_args: object) -> None:
        pool_checked_out.set(max(_number("checkedout"), 0.0))
        pool_size.set(_number("size"))
        pool_overflow.set(max(_number("overflow"), 0.0))

    event.listen(engine, "checkout", update)
    event.listen(engine, "checkin", update)


class _Own(Collector):
    def collect(self) -> Iterable[Any]:
        return REGISTRY.collect()


def exposition(*extra: Collector) -> bytes:
    """The text a scrape gets: every process's metrics (multiprocess mode) or this one's, and
    what `extra` collectors read at this moment."""
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    if directory:
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Own())
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)
