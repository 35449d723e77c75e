"""The embedded queue (`make run`'s background jobs): it starts only in a process that serves,
and runs nothing until the database schema is current."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from portal import create_app, migrate
from workers.queue import EmbeddedQueue

ROOT = Path(__file__).resolve().parent.parent.parent


def _development_env(folder: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "SECRET_KEY", "PUBLIC_URL", "MAIL_URL"}
    }
    env.update(
        PORTAL_ENV="development",
        DATABASE_URL=f"sqlite:///{folder / 'portal.db'}",
        PORTAL_STORAGE_DIR=str(folder / "files"),
        PORTAL_MAIL_DIR=str(folder / "mail"),
    )
    return env


def test_make_runs_migrate_and_seed_on_a_fresh_instance_print_no_error(tmp_path: Path) -> None:
    """`make run`'s first two steps: background work used to start with them and query
    tables the migration had not made yet ("no such table: payments", four tracebacks)."""
    env = _development_env(tmp_path)
    outputs = []
    for command in (["db", "upgrade"], ["seed", "demo"]):
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "Traceback" not in output and "ERROR" not in output, output
        outputs.append(output)
    assert "database is at the latest schema" in outputs[0]
    assert "seeded: Acme Corp, Globex GmbH, Initech" in outputs[1]


@pytest.fixture
def development_app(tmp_path: Path) -> Iterator[Flask]:
    """A `make run` app over an empty database file (nothing migrated yet)."""
    app = create_app(
        {
            "env": "development",
            "database_url": f"sqlite:///{tmp_path / 'portal.db'}",
            "storage_dir": str(tmp_path / "files"),
            "mail_dir": str(tmp_path / "mail"),
            "redis_url": "",
        }
    )
    yield app
    app.extensions["portal.jobs"].stop()
    app.extensions["portal.db"].engine.dispose()


def test_jobs_start_with_the_first_request_and_wait_for_the_schema(
    development_app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(EmbeddedQueue, "READY_POLL", 0.05)
    queue: EmbeddedQueue = development_app.extensions["portal.jobs"]
    assert not queue.started  # building the app (every `flask` command does) starts nothing
    ran = threading.Event()
    queue.enqueue(ran.set)

    with caplog.at_level(logging.INFO, logger="workers.queue"):
        assert development_app.test_client().get("/healthz").status_code == 200
        assert queue.started
        assert not ran.wait(0.5)  # the schema is not there: nothing runs
        migrate.upgrade(str(development_app.extensions["portal.db"].engine.url))
        assert ran.wait(30)  # once it is, the jobs start (the sweeps too, without errors)
        after_the_sweeps = threading.Event()
        queue.enqueue(after_the_sweeps.set)
        assert after_the_sweeps.wait(30)
        development_app.test_client().get("/healthz")  # a later request starts nothing more

    waiting = [r for r in caplog.records if "schema is not current" in r.getMessage()]
    assert len(waiting) == 1, caplog.text  # one clear line, not one per look
    assert waiting[0].levelno == logging.WARNING
    assert "flask --app wsgi db upgrade" in waiting[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert [t.name for t in threading.enumerate()].count("portal-jobs") == 1


def test_a_stopped_queue_that_never_became_ready_runs_nothing() -> None:
    ran: list[str] = []
    queue = EmbeddedQueue(run=lambda job: job(), ready=lambda: False)
    queue.enqueue(lambda: ran.append("job"))
    queue.start()
    queue.stop()
    assert ran == [] and not queue.started
