"""A `redis-server` of the bench's own (pages and jobs), started on a free port, stopped after."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis


class RedisServer:
    """A `redis-server` of the bench's own, without persistence, on a port found free."""

    def __init__(self, log: Path) -> None:
        with socket.socket() as probe:  # redis-server cannot bind port 0: find a free one
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        found = shutil.which("redis-server")
        if not found:
            raise SystemExit("redis-server not found: apt-get install redis-server")
        with log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - redis-server, fixed arguments
                [
                    *(found, "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no"),
                ],
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 10
        with self.client() as client:
            while True:  # until it answers (or the deadline)
                try:
                    client.ping()
                    return
                except Exception:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        self.stop()
                        raise
                    time.sleep(0.02)

    def client(self) -> Redis:
        return Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def redis_server(log: Path) -> Iterator[RedisServer]:
    server = RedisServer(log)
    try:
        yield server
    finally:
        server.stop()
