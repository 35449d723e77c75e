"""What a process writes: the app's logging set up once however often create_app runs, JSON or
text; gunicorn's own and access lines as JSON (gunicorn.conf.py's logconfig_dict)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from portal.config import PROJECT_ROOT

SCRIPT = """
import logging, sys
from portal import create_app
first, second = create_app(), create_app()
print(sum(1 for h in logging.getLogger().handlers), flush=True)
logging.getLogger("portal.check").warning("hello with password=%s", "hunter2")
answer = second.test_client().get("/healthz", headers={"X-Request-ID": "proc-1"})
print(answer.headers["X-Request-ID"], flush=True)
try:
    raise ValueError("token=pt_AAAAAAAAAAAAAAAAAAAAAAAA")
except ValueError:
    logging.getLogger("portal.check").exception("it failed")
"""


def _environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LOG_", "SENTRY_", "PORTAL_", "GUNICORN_"))
    }
    environ.update(
        PORTAL_ENV="testing",
        DATABASE_URL=f"sqlite:///{tmp_path / 'portal.db'}",
        PORTAL_STORAGE_DIR=str(tmp_path / "files"),
        PORTAL_MAIL_DIR=str(tmp_path / "mail"),
        **extra,
    )
    return environ


def _run(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=PROJECT_ROOT,
        env=_environ(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_one_handler_json_lines_with_the_request_id(tmp_path: Path) -> None:
    ran = _run(tmp_path, LOG_LEVEL="DEBUG")
    assert ran.stdout.split() == ["1", "proc-1"]  # two create_app calls, one handler
    lines = [json.loads(line) for line in ran.stderr.splitlines()]  # every line is JSON
    [hello] = [line for line in lines if line["message"].startswith("hello")]
    assert hello["message"] == "hello with password=[redacted]" and hello["level"] == "WARNING"
    assert hello["logger"] == "portal.check" and hello["request_id"] is None
    assert hello["time"].endswith("Z") and "T" in hello["time"]
    [probe] = [line for line in lines if line["logger"] == "portal.request"]
    assert probe["request_id"] == "proc-1" and probe["level"] == "DEBUG"
    assert (probe["method"], probe["path"], probe["status"]) == ("GET", "/healthz", 200)
    assert probe["endpoint"] == "health.healthz" and probe["duration_ms"] >= 0
    [failed] = [line for line in lines if line["message"] == "it failed"]
    assert "ValueError" in failed["exception"] and "pt_AAAA" not in failed["exception"]
    assert "hunter2" not in ran.stderr


def test_text_in_development_or_when_asked_and_the_level_holds(tmp_path: Path) -> None:
    ran = _run(tmp_path, LOG_FORMAT="text", LOG_LEVEL="WARNING")
    assert ran.stdout.split() == ["1", "proc-1"]
    assert "WARNING portal.check: hello with password=[redacted]" in ran.stderr
    assert "portal.request" not in ran.stderr  # below WARNING
    assert not ran.stderr.lstrip().startswith("{") and "hunter2" not in ran.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            status: int = answer.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


def test_gunicorn_writes_its_access_log_as_json_lines(tmp_path: Path) -> None:
    port = _free_port()
    environ = _environ(
        tmp_path, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="1", GUNICORN_TIMEOUT="60"
    )
    # A migrated database: every page reads the rollout flags from it first.
    subprocess.run(
        [str(Path(sys.executable).with_name("flask")), "--app", "wsgi", "db", "upgrade"],
        cwd=PROJECT_ROOT,
        env=environ,
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=PROJECT_ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{base}/healthz", {}) == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not start"
            time.sleep(0.2)
        agent = {"User-Agent": "log-check/1.0"}
        assert _get(f"{base}/healthz?probe=1", {**agent, "X-Request-ID": "gun-1"}) == 200
        secret = _get(f"{base}/portal/download/c2VjcmV0LWxpbms.x.y?token=hunter2", agent)
        assert secret < 500  # the link is refused with a page of its own
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    access = [json.loads(line) for line in out.splitlines() if line.strip()]
    errors = [json.loads(line) for line in err.splitlines() if line.strip()]  # JSON too
    assert any(line["logger"] == "gunicorn.error" for line in errors)
    [probe] = [line for line in access if line["request_id"] == "gun-1"]
    expected: dict[str, Any] = {
        "logger": "gunicorn.access",
        "remote_addr": "127.0.0.1",
        "method": "GET",
        "path": "/healthz",
        "status": 200,
        "user_agent": "log-check/1.0",
    }
    assert {key: probe[key] for key in expected} == expected
    assert isinstance(probe["duration_ms"], int) and probe["bytes"] > 0
    [download] = [line for line in access if line["path"].startswith("/portal/download/")]
    assert download["path"] == "/portal/download/[redacted]" and len(download["request_id"]) == 32
    assert "hunter2" not in out + err and "c2VjcmV0LWxpbms" not in out + err
