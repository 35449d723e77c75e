"""A `redis-server` of a test's own, on a port of its own: stopped (killed), paused (SIGSTOP)
and started again (empty: it keeps nothing) under the app or the workers that use it. The same
as the bench's (bench/redis_server.py)."""

from __future__ import annotations

from bench.redis_server import PAUSED, STOPPED, RedisServer

__all__ = ["PAUSED", "STOPPED", "RedisServer"]
