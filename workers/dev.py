"""`make run` after its migrate and seed steps: the web server, an RQ worker and Redis, all real,
on a machine with nothing installed but Python.

    python -m workers.dev [--port 5000] [--instance instance/]

Redis is REDIS_URL when it is set, else an embedded one (workers/embedded_redis.py) on
`<instance>/redis.sock`. The worker (WORKER_COMMAND) and the web server (WEB_COMMAND) run as
child processes with REDIS_URL pointing there, each in a process group of its own, so a Ctrl-C
in the terminal reaches this supervisor only, which stops them in order: SIGINT, SIGTERM or
SIGHUP stops the web server and the worker (SIGTERM; SIGKILL to the group after STOP_TIMEOUT),
then Redis, and exits 0. A worker that dies on its own is started again after a pause that
doubles up to RESTART_MAX; a web server or a Redis that dies stops everything, exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

from workers.embedded_redis import EmbeddedRedis, EmbeddedRedisError

ROOT = Path(__file__).resolve().parent.parent
FLASK = (sys.executable, "-m", "flask", "--app", "wsgi")
WORKER_COMMAND = (*FLASK, "jobs", "worker")
HOST = "127.0.0.1"
WEB_COMMAND = (*FLASK, "run", "--host", HOST)  # then --port PORT
STOP_TIMEOUT = 8.0  # seconds for the web server and the worker to exit before SIGKILL
RESTART_FIRST = 1.0  # seconds before a dead worker is started again; doubles each time ...
RESTART_MAX = 30.0  # ... up to this
RESTART_RESET = 60.0  # a worker that ran this long before dying starts again after RESTART_FIRST
POLL = 0.1  # seconds between looks at the children

log = logging.getLogger("workers.dev")


class Child:
    """One supervised command, in a process group of its own."""

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.command = list(command)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - this module's own commands
            self.command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, process_group=0
        )
        self.started = time.monotonic()

    def exited(self) -> int | None:
        """The exit code once it has exited (None while it runs or before it starts)."""
        return None if self.process is None else self.process.poll()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def stop(children: Sequence[Child], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to each running child (the RQ worker then finishes its job: a warm shutdown),
    wait up to `timeout` for all of them, then SIGKILL the process group of any still running
    (a worker's work horse with it)."""
    running = [child for child in children if child.running()]
    for child in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning(
                "%s (pid %d) did not stop within %.0f s: killed", child.name, child.pid, timeout
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.process.wait()


class StopRequest:
    """Set by SIGINT, SIGTERM or SIGHUP (the terminal closed): the signal that asked to stop."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self)


class Supervisor:
    """Runs the children until a signal (exit 0) or the web server's death (exit 1)."""

    def __init__(
        self, web: Child, worker: Child, redis: EmbeddedRedis | None, asked: StopRequest
    ) -> None:
        self.web = web
        self.worker = worker
        self.redis = redis
        self.asked = asked
        self.restart_at: float | None = None
        self.restart_delay = RESTART_FIRST

    def run(self) -> int:
        while self.asked.signum is None:
            code = self.web.exited()
            if code is not None:
                log.error("the web server exited (code %s): stopping", code)
                return 1
            if self.redis is not None and not self.redis.running():
                log.error("Redis exited: stopping (its log is %s)", self.redis.log_path)
                return 1
            self._look_after_worker()
            time.sleep(POLL)
        log.info("%s: stopping", signal.Signals(self.asked.signum).name)
        return 0

    def _look_after_worker(self) -> None:
        now = time.monotonic()
        if self.restart_at is None:
            code = self.worker.exited()
            if code is None:
                return
            if now - self.worker.started >= RESTART_RESET:
                self.restart_delay = RESTART_FIRST
            log.warning(
                "the worker (pid %d) exited (code %s): starting it again in %.0f s",
                self.worker.pid,
                code,
                self.restart_delay,
            )
            self.restart_at = now + self.restart_delay
            self.restart_delay = min(self.restart_delay * 2, RESTART_MAX)
        elif now >= self.restart_at:
            self.restart_at = None
            self.worker.start()
            log.info("worker started again: pid %d", self.worker.pid)


def redacted(url: str) -> str:
    """REDIS_URL as it may be logged: its password, if any, starred out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"***@{parts.netloc.rpartition('@')[2]}"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.dev", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 5000))
    parser.add_argument(
        "--instance",
        type=Path,
        default=ROOT / "instance",
        help="where the embedded Redis keeps its socket, pid file and log (default: instance/)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    asked = StopRequest()
    asked.install()  # before anything starts, so a Ctrl-C meanwhile still stops what did
    redis = None if os.environ.get("REDIS_URL") else EmbeddedRedis(args.instance)
    children: list[Child] = []
    try:
        if redis is not None:
            try:
                redis.start()
            except EmbeddedRedisError as error:
                log.error("%s", error)
                return 1
        redis_url = redis.url if redis is not None else os.environ["REDIS_URL"]
        env = {**os.environ, "REDIS_URL": redis_url, "PORT": str(args.port)}
        worker = Child("worker", WORKER_COMMAND, env)
        web = Child("web server", [*WEB_COMMAND, "--port", str(args.port)], env)
        children = [web, worker]
        if asked.signum is not None:
            return 0
        worker.start()
        web.start()
        log.info(
            "web http://%s:%d (pid %d), RQ worker pid %d, Redis %s",
            HOST,
            args.port,
            web.pid,
            worker.pid,
            f"{redis.url} (embedded, pid {redis.pid}, log {redis.log_path})"
            if redis is not None
            else f"{redacted(redis_url)} (REDIS_URL)",
        )
        return Supervisor(web, worker, redis, asked).run()
    finally:
        stop(children)
        if redis is not None:
            redis.stop()
        log.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
