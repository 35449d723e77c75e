"""A `redis-server` of a test's own, on a port of its own: stopped (killed), paused (SIGSTOP)
and started again (empty: it keeps nothing) under the app or the workers that use it."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

from redis import Redis

from workers.queue import client_options

STOPPED, PAUSED = "stopped", "paused"


class RedisServer:
    """A `redis-server` of the test's own, without persistence, on a port found free."""

    def __init__(self) -> None:
        with socket.socket() as probe:  # redis-server cannot bind port 0: find a free one
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    def client(self) -> Redis:
        return Redis.from_url(self.url, **client_options(1.0))

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        with self.client() as client:
            while True:  # until it answers (or the deadline)
                try:
                    client.ping()
                    return
                except Exception:
                    if time.monotonic() > deadline or self.process.poll() is not None:
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
        self.repair()
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)
        self.process = None
