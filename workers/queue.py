"""The RQ queue the portal enqueues on, for the configured REDIS_URL."""

from __future__ import annotations

from redis import Redis
from rq import Queue

QUEUE_NAME = "portal"


def connect(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


def get_queue(redis_url: str) -> Queue:
    return Queue(QUEUE_NAME, connection=connect(redis_url), default_timeout=300)
