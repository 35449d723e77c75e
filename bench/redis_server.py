"""A `redis-server` of its own (the bench's, a test's), on a port found free, without
persistence: started, stopped (killed), paused (SIGSTOP) and started again (empty: it keeps
nothing) under the app or the workers that use it."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from redis import Redis

from workers.queue import client_options

STOPPED, PAUSED = "stopped", "paused"


class RedisServer:
    def __init__(self, log: Path | None = None) -> None:
        with socket.socket() as probe:  # redis-server cannot bind port 0: find a free one
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    def client(self) -> Redis:
        return Redis.from_url(self.url, **client_options(5.0))

    def start(self) -> None:
        found = shutil.which("redis-server")
        if not found:
            raise SystemExit("redis-server not found: apt-get install redis-server")
        output: IO[bytes] | int = self.log.open("ab") if self.log else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(  # noqa: S603 - redis-server, fixed arguments
                [
                    *(found, "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no"),
                ],
                stdout=output,
                stderr=output,
            )
        finally:
            if not isinstance(output, int):
                output.close()
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

    def fail(self, fault: str) -> None:
        assert self.process is not None
        if fault == PAUSED:
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True
        else:
            self.process.kill()
            self.process.wait()
            self.process = None

    def repair(self) -> None:
        if self.process is None:
            self.start()
        elif self.paused:
            self.process.send_signal(signal.SIGCONT)
            self.paused = False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.paused:
            self.process.send_signal(signal.SIGCONT)
            self.paused = False
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextmanager
def redis_server(log: Path | None = None) -> Iterator[RedisServer]:
    server = RedisServer(log)
    server.start()
    try:
        yield server
    finally:
        server.stop()
