"""A PostgreSQL cluster of a test's own: made by initdb in a temporary folder, served on a port
found free, restarted and stopped under the app that uses it, removed afterwards (whatever
happened). PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user
(`runuser`), which owns the folder."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SETTINGS = (
    "listen_addresses = '127.0.0.1'",
    # What the cluster keeps is thrown away after the test: no durability to wait for.
    "fsync = off",
    "synchronous_commit = off",
    "full_page_writes = off",
    "max_connections = 40",
)


class Unavailable(Exception):
    """PostgreSQL's server programs (initdb, pg_ctl) are not installed."""


def _bindir() -> Path:
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    candidates += [Path(p) for p in versions]
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise Unavailable("PostgreSQL's initdb and pg_ctl not found (apt-get install postgresql)")


class PostgresServer:
    def __init__(self) -> None:
        self.bindir = _bindir()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.folder = Path(tempfile.mkdtemp(prefix="portal-postgres-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.as_postgres = os.geteuid() == 0

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        # Output to a file, never a pipe: the server pg_ctl starts would inherit the pipe and
        # keep it open, and reading it to its end would wait for the server to exit.
        with tempfile.TemporaryFile() as output:
            done = subprocess.run(
                command, stdout=output, stderr=output, timeout=timeout, check=False
            )
            if done.returncode != 0:
                output.seek(0)
                said = output.read().decode(errors="replace")
                raise RuntimeError(f"{program} {' '.join(args)} failed: {said}")

    def create(self) -> None:
        if self.as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            *("-D", str(self.data), "-U", "postgres", "-A", "trust"),
            *("-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"),
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join((*SETTINGS, f"port = {self.port}")) + "\n")
            conf.write(f"unix_socket_directories = '{self.folder}'\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stop (fast: every session is told "terminating connection due to administrator
        command" and closed) and start again: a dropped connection, not an outage."""
        self._run(
            "pg_ctl",
            *("-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "-t", "60"),
            "restart",
        )

    def remove(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
