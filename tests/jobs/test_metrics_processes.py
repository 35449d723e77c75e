"""/metrics across processes (PROMETHEUS_MULTIPROC_DIR): gunicorn with two workers, as
`make serve` runs it, and a real job worker. Whichever worker served a request, the scrape
counts it once; a worker killed keeps its counts while its live gauges (the pool's) go; a job
run by RQ's forked children is timed, in one set of files per worker, and the children's
gauges go with them."""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from portal.models import WorkState
from tests.conftest import Backend
from tests.jobs.test_faults import PORTAL_VARIABLES, Portal, _children, _free_port
from tests.redis_server import RedisServer
from tests.web.test_metrics import Samples, parse, value

ROOT = Path(__file__).resolve().parents[2]
HOST = "billing.metrics.test"
TOKEN = "metrics-" + secrets.token_hex(20)
REQUESTS = 40


def _until(what: str, check: Callable[[], object], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within:.0f} s")
        time.sleep(0.1)


class Gunicorn:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def get(self, path: str, **headers: str) -> tuple[int, str]:
        """One request on a connection of its own (a sync worker serves one at a time)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(
                "GET", path, headers={"Host": HOST, "Connection": "close", **headers}
            )
            answer = connection.getresponse()
            return answer.status, answer.read().decode()
        finally:
            connection.close()

    def scrape(self) -> Samples:
        status, body = self.get("/metrics", Authorization=f"Bearer {TOKEN}")
        assert status == 200, body
        return parse(body)

    def workers(self) -> list[int]:
        return [pid for pid in _children(self.process.pid) if Path(f"/proc/{pid}").exists()]


@pytest.fixture
def gunicorn(database: Backend, redis_server: RedisServer, tmp_path: Path) -> Iterator[Gunicorn]:
    port = _free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"")  # an earlier run's: emptied on start
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in PORTAL_VARIABLES and not name.startswith(("PORTAL_", "STRIPE_"))
    }
    env.update(
        {
            "PORTAL_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "PUBLIC_URL": f"https://{HOST}",
            "PAYMENT_GATEWAY": "sandbox",
            "DATABASE_URL": database.url,
            "REDIS_URL": redis_server.url,
            "METRICS_TOKEN": TOKEN,
            "PORTAL_STORAGE_DIR": str(database.storage),
            "PORTAL_MAIL_DIR": str(tmp_path / "mail"),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "GUNICORN_WORKERS": "2",
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_MAX_REQUESTS": "0",
        }
    )
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Gunicorn(process, port, log)
    try:

        def up() -> bool:
            with contextlib.suppress(OSError):
                return server.get("/healthz")[0] == 200 and len(server.workers()) == 2
            return False

        _until(f"gunicorn on {port}\n{log.read_text(errors='replace')}", up, 60)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        print(log.read_text(errors="replace")[-8000:])  # shown when the test failed


class _Fixed:
    """Metric families already read (one file's), as a collector."""

    def __init__(self, families: Any) -> None:
        self.families = families

    def collect(self) -> Any:
        return self.families


def _samples(families: Any) -> Samples:
    registry = CollectorRegistry()
    registry.register(_Fixed(families))
    return parse(generate_latest(registry).decode())


def _readyz(samples: Samples) -> float:
    return value(
        samples, "portal_http_requests_total", endpoint="health.readyz", method="GET", status="200"
    )


def test_two_gunicorn_workers_count_as_one_and_a_killed_one_keeps_its_counts(
    gunicorn: Gunicorn, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    assert not (metrics_dir / "counter_1.db").exists()  # emptied as gunicorn started
    assert gunicorn.get("/metrics")[0] == 401  # the token is still wanted
    workers = gunicorn.workers()

    def files(kind: str) -> set[int]:
        return {int(path.stem.rpartition("_")[2]) for path in metrics_dir.glob(f"{kind}_*.db")}

    def warm() -> bool:  # both workers have loaded the app and served (a liveness check)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _n: gunicorn.get("/healthz"), range(8)))
        return files("counter") == set(workers)

    _until("both workers serving", warm, 60)
    # Four at a time: while one worker is busy the other takes the next, so both serve some.
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _n: gunicorn.get("/readyz")[0], range(REQUESTS)))
    assert statuses == [200] * REQUESTS
    each = {
        pid: _readyz(
            _samples(MultiProcessCollector.merge([str(metrics_dir / f"counter_{pid}.db")]))
        )
        for pid in workers
    }
    assert sum(each.values()) == REQUESTS and all(each.values()), each  # both served some
    first = gunicorn.scrape()
    assert _readyz(first) == REQUESTS
    assert (
        value(
            first,
            "portal_http_request_duration_seconds_count",
            endpoint="health.readyz",
            method="GET",
        )
        == REQUESTS
    )
    assert value(first, "portal_db_pool_size") > 0

    # One worker killed: gunicorn replaces it, its counts stay, its live gauges go.
    dead = workers[0]
    os.kill(dead, signal.SIGKILL)
    _until(
        "the dead worker's live gauges dropped",
        lambda: not (metrics_dir / f"gauge_livesum_{dead}.db").exists(),
    )
    _until("a new worker", lambda: len(gunicorn.workers()) == 2 and dead not in gunicorn.workers())
    assert (metrics_dir / f"counter_{dead}.db").exists()
    for _ in range(5):
        assert gunicorn.get("/readyz")[0] == 200
    after = gunicorn.scrape()
    assert _readyz(after) == REQUESTS + 5
    live = {int(p.stem.rpartition("_")[2]) for p in metrics_dir.glob("gauge_livesum_*.db")}
    assert dead not in live and live <= set(gunicorn.workers())


def test_a_real_worker_times_its_jobs_and_its_children_leave_no_gauges(
    portal: Portal, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "worker-metrics"
    metrics_dir.mkdir()
    portal.workers.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    worker = portal.workers.start()
    work_ids = [portal.hand_off("workers.jobs.healthcheck", f"t{n}") for n in range(3)]
    portal.until(
        "the health checks ran",
        lambda: all(portal.row(w).state is WorkState.DONE for w in work_ids),
        60,
    )
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))

    def timed() -> float:
        samples = parse(generate_latest(registry).decode())
        return value(
            samples, "portal_job_duration_seconds_count", job="healthcheck", outcome="done"
        )

    _until("three job timings", lambda: timed() == 3)
    # Each job ran in a child RQ forked: the children wrote, one after another, to one set of
    # files named after their worker (not a set per job), and their live gauges went with them.
    histograms = {p.name for p in metrics_dir.glob("histogram_*.db")}
    assert histograms == {f"histogram_{worker.pid}job.db"}, histograms

    def gauges() -> set[str]:
        return {p.name for p in metrics_dir.glob("gauge_livesum_*.db")}

    # Only the worker's own (its dispatcher's pool), once the last child has been reaped.
    _until(
        f"the children's gauges dropped: {gauges()}",
        lambda: gauges() <= {f"gauge_livesum_{worker.pid}.db"},
    )
    assert f"gauge_livesum_{worker.pid}job.db" not in gauges()
