"""Production serving as `make serve` and the container run it: `gunicorn -c gunicorn.conf.py
wsgi:app`, the real configuration file, production settings on the test database, on a free
port. It answers /healthz and a page, runs the configured number of workers, passes the
container's health check, and leaves on SIGTERM with exit status 0."""

from __future__ import annotations

import http.client
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRET, Backend

ROOT = Path(__file__).resolve().parent.parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
HOST = "billing.serving.test"
REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
WORKERS = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def production_env(backend: Backend, folder: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GUNICORN_")
        and key not in {"METRICS_TOKEN", "SECRET_KEY_FALLBACKS", "PORT", "TRUSTED_PROXY_HOPS"}
    }
    env.update(
        PORTAL_ENV="production",
        SECRET_KEY=TEST_SECRET,
        PUBLIC_URL=f"https://{HOST}",
        PAYMENT_GATEWAY="sandbox",
        REDIS_URL=REDIS_URL,
        DATABASE_URL=backend.url,
        PORTAL_STORAGE_DIR=str(backend.storage),
        PORTAL_MAIL_DIR=str(folder / "mail"),
        **extra,
    )
    return env


def get(port: int, path: str, host: str = HOST) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Host": host})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (gunicorn's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    env: dict[str, str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def served(backend: Backend, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    env = production_env(
        backend,
        tmp_path,
        GUNICORN_WORKERS=str(WORKERS),
        GUNICORN_BIND=f"127.0.0.1:{port}",
    )
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [GUNICORN, "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Served(process, port, log, env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"gunicorn exited:\n{server.output()}"
            try:
                if get(port, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"gunicorn did not answer:\n{server.output()}"
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_the_configuration_checks_and_sizes_workers_from_the_environment(
    backend: Backend, tmp_path: Path
) -> None:
    env = production_env(backend, tmp_path)
    checked = subprocess.run(
        [GUNICORN, "--check-config", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def workers(**extra: str) -> int:
        printed = subprocess.run(
            [GUNICORN, "--print-config", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert printed.returncode == 0, printed.stdout + printed.stderr
        values = {
            name.strip(): value.strip()
            for name, _, value in (line.partition("=") for line in printed.stdout.splitlines())
        }
        assert values["control_socket_disable"] == "True"
        return int(values["workers"])

    assert workers() == 2 * multiprocessing.cpu_count() + 1  # two per core plus one
    assert workers(GUNICORN_WORKERS="3") == 3


def test_gunicorn_serves_with_the_configured_workers_and_stops_on_sigterm(
    served: Served,
) -> None:
    status, body = get(served.port, "/healthz")
    assert status == 200 and b'"ok"' in body
    status, body = get(served.port, "/login")
    assert status == 200 and b"Sign in" in body
    # Production answers to PUBLIC_URL's name only.
    assert get(served.port, "/login", host="127.0.0.1")[0] == 400

    deadline = time.monotonic() + 30
    while len(children(served.process.pid)) != WORKERS:
        assert time.monotonic() < deadline, f"workers: {children(served.process.pid)}"
        time.sleep(0.1)
    workers = children(served.process.pid)
    time.sleep(1)  # and they stay: none is crashing and being replaced
    assert children(served.process.pid) == workers

    # The container's HEALTHCHECK, run against it (and against nothing).
    check = [sys.executable, str(ROOT / "healthcheck.py")]
    ok = subprocess.run(check, env={**served.env, "PORT": str(served.port)}, timeout=30)
    assert ok.returncode == 0
    dead = subprocess.run(check, env={**served.env, "PORT": str(free_port())}, timeout=30)
    assert dead.returncode == 1

    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(40) == 0, served.output()
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
