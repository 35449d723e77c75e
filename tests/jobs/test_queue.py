"""Jobs go through a real Redis and a real RQ worker."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import SimpleWorker

from workers import jobs
from workers.queue import get_queue

REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> Iterator[str]:
    try:
        with Redis.from_url(REDIS_URL, socket_connect_timeout=1) as probe:
            probe.ping()
    except Exception as error:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {error}")
    yield REDIS_URL
    with Redis.from_url(REDIS_URL) as redis:
        redis.flushdb()


def test_a_worker_runs_an_enqueued_job(redis_url: str) -> None:
    queue = get_queue(redis_url)
    token = secrets.token_hex(8)
    job = queue.enqueue(jobs.healthcheck, token)
    assert job.get_status() == "queued"
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    job.refresh()
    assert job.get_status() == "finished"
    assert job.return_value()["token"] == token
