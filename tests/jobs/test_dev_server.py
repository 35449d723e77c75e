"""`make run`'s processes (workers/dev.py), run for real: the web server, an RQ worker and the
embedded Redis, over a SQLite database migrated and seeded as the Makefile does, then stopped
by a signal, or left without a worker or a web server."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Worker

from workers.dev import redacted
from workers.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.embedded_redis

ROOT = Path(__file__).resolve().parent.parent.parent
STARTED = re.compile(
    r"web (\S+) \(pid (\d+)\), RQ worker pid (\d+), "
    r"Redis (\S+) \((?:embedded, pid (\d+)|REDIS_URL\))"
)
STOP_BOUND = 15.0  # seconds from the signal until every process is gone


def until(
    what: str, check: Callable[[], Any], timeout: float = 30.0, log: Callable[[], str] = str
) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` (and showing `log()`)
    after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{log()}"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def development_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`make run`'s environment over a database of the module's own, migrated and seeded by the
    Makefile's commands."""
    folder = tmp_path_factory.mktemp("dev-server")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "PUBLIC_URL", "MAIL_URL", "PORT", "FLASK_DEBUG"}
    }
    env.update(
        PORTAL_ENV="development",
        SECRET_KEY="dev-server-test-" + "k" * 32,  # else development writes instance/secret_key
        DATABASE_URL=f"sqlite:///{folder / 'portal.db'}",
        PORTAL_STORAGE_DIR=str(folder / "files"),
        PORTAL_MAIL_DIR=str(folder / "mail"),
    )
    for command in (["db", "upgrade"], ["seed", "demo"]):
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return env


@dataclass
class DevServer:
    process: subprocess.Popen[bytes]
    output: Path
    instance: Path
    web_url: str
    web_pid: int
    worker_pid: int
    redis_url: str
    redis_pid: int | None  # None: REDIS_URL's, not embedded

    @property
    def socket(self) -> Path:
        return self.instance / "redis.sock"

    @property
    def pids(self) -> list[int]:
        return [self.web_pid, self.worker_pid, *([self.redis_pid] if self.redis_pid else [])]

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url, socket_timeout=5)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.web_url + path, timeout=5) as answer:  # noqa: S310
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return 0, b""

    def registered_workers(self) -> list[Worker]:
        with self.redis() as connection:
            return Worker.all(connection=connection)

    def stops_with(self, code: int, after: float) -> None:
        """The supervisor exits with `code`, and every process and the socket are gone, within
        STOP_BOUND seconds of `after`."""
        self.process.wait(STOP_BOUND)
        assert self.process.returncode == code, self.log()
        until("every child gone", lambda: all(gone(pid) for pid in self.pids), timeout=1)
        assert time.monotonic() - after < STOP_BOUND
        assert not self.socket.exists(), self.log()
        assert not (self.instance / "redis.pid").exists()


def start(env: dict[str, str], folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`python -m workers.dev` as `make run` starts it, on a free port, its instance directory
    and its output in `folder`."""
    output = folder / "dev.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.dev", "--instance", str(folder / "instance")],
            cwd=ROOT,
            env={**env, "PORT": str(free_port())},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return process, output


@contextmanager
def running(env: dict[str, str], folder: Path) -> Iterator[DevServer]:
    """The supervisor up and answering: /healthz says ok and its worker is registered in its
    Redis. Stopped (SIGINT) at the end if the test did not."""
    process, output = start(env, folder)

    def started() -> re.Match[str] | None:
        log = output.read_text(errors="replace")
        assert process.poll() is None, log  # it did not exit instead
        return STARTED.search(log)

    try:
        found = until("the line saying what runs where", started, log=output.read_text)
        web_url, web_pid, worker_pid, redis_url, redis_pid = found.groups()
        server = DevServer(
            process,
            output,
            folder / "instance",
            web_url,
            int(web_pid),
            int(worker_pid),
            redis_url,
            int(redis_pid) if redis_pid else None,
        )

        def answers(path: str) -> bool:
            assert process.poll() is None, server.log()  # it did not exit instead
            return server.get(path)[0] == 200

        until("/healthz", lambda: answers("/healthz"), log=server.log)
        until(
            "the worker in Redis",
            lambda: server.worker_pid in [w.pid for w in server.registered_workers()],
            log=server.log,
        )
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_BOUND)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def dev_server(development_env: dict[str, str], tmp_path: Path) -> Iterator[DevServer]:
    with running(development_env, tmp_path) as server:
        yield server


def test_it_runs_the_web_server_a_worker_and_redis_and_sigint_stops_them_all(
    dev_server: DevServer,
) -> None:
    assert dev_server.redis_url == f"unix://{dev_server.socket.resolve()}"
    status, body = dev_server.get("/readyz")
    ready = json.loads(body)
    assert status == 200 and (ready["status"], ready["redis"]) == ("ready", "ok"), ready
    assert [w.queue_names() for w in dev_server.registered_workers()] == [["portal"]]

    asked = time.monotonic()
    dev_server.process.send_signal(signal.SIGINT)
    dev_server.stops_with(0, after=asked)
    log = dev_server.log()
    assert "SIGINT: stopping" in log and "stopped" in log
    assert "did not stop" not in log, log  # the worker's warm shutdown, no SIGKILL
    assert "Traceback" not in log, log


def test_a_worker_that_dies_is_started_again(dev_server: DevServer) -> None:
    os.kill(dev_server.worker_pid, signal.SIGKILL)
    again = until(
        "the worker started again",
        lambda: re.search(r"worker started again: pid (\d+)", dev_server.log()),
        log=dev_server.log,
    )
    pid = int(again.group(1))
    assert pid != dev_server.worker_pid
    until(
        "the new worker in Redis",
        lambda: pid in [w.pid for w in dev_server.registered_workers()],
        log=dev_server.log,
    )
    assert f"the worker (pid {dev_server.worker_pid}) exited (code -9)" in dev_server.log()

    asked = time.monotonic()
    dev_server.process.send_signal(signal.SIGTERM)
    dev_server.worker_pid = pid
    dev_server.stops_with(0, after=asked)


def test_a_web_server_that_dies_stops_everything_with_an_error(dev_server: DevServer) -> None:
    died = time.monotonic()
    os.kill(dev_server.web_pid, signal.SIGKILL)
    dev_server.stops_with(1, after=died)
    assert "the web server exited (code -9): stopping" in dev_server.log()


def test_redis_that_dies_stops_everything_with_an_error(dev_server: DevServer) -> None:
    assert dev_server.redis_pid is not None
    died = time.monotonic()
    os.kill(dev_server.redis_pid, signal.SIGKILL)
    dev_server.stops_with(1, after=died)
    assert "Redis exited: stopping" in dev_server.log()


def test_with_redis_url_it_uses_that_redis_and_starts_none(
    development_env: dict[str, str], tmp_path: Path
) -> None:
    with EmbeddedRedis(tmp_path / "outside") as outside:
        env = {**development_env, "REDIS_URL": outside.url}
        with running(env, tmp_path) as dev_server:
            assert dev_server.redis_url == outside.url and dev_server.redis_pid is None
            assert f"Redis {outside.url} (REDIS_URL)" in dev_server.log()
            assert not (tmp_path / "instance").exists()
            asked = time.monotonic()
            dev_server.process.send_signal(signal.SIGINT)
            dev_server.stops_with(0, after=asked)
        with Redis.from_url(outside.url) as redis:
            assert redis.ping()  # left running: not the supervisor's


def test_a_redis_already_answering_in_the_instance_is_an_error_and_starts_nothing(
    development_env: dict[str, str], tmp_path: Path
) -> None:
    with EmbeddedRedis(tmp_path / "instance") as other:
        process, output = start(development_env, tmp_path)
        assert process.wait(STOP_BOUND) == 1
        log = output.read_text()
        assert f"a Redis (pid {other.pid}) already answers on {other.socket_path}" in log, log
        assert "web http" not in log  # nothing else was started
        assert other.running() and other.socket_path.exists()


def test_a_password_in_redis_url_is_not_logged() -> None:
    assert redacted("redis://:s3cret@cache:6379/0") == "redis://***@cache:6379/0"
    assert redacted("redis://user:s3cret@cache/1") == "redis://***@cache/1"
    assert redacted("unix:///srv/redis.sock") == "unix:///srv/redis.sock"
