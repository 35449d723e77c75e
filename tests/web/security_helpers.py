"""Apps configured as production and development for the security tests, on the test
database, and a transaction shared by several apps (a restart under another configuration)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy.orm import sessionmaker

from portal import clock
from portal.extensions import limiter
from tests.conftest import Backend, make_app
from tests.work import ManualQueue
from workers.queue import RQJobQueue

PUBLIC_URL = "https://billing.example.com"
# Its queue is replaced by the tests' manual one (tests/work.py), so nothing reaches Redis.
REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def app_as(backend: Backend, env: str, **overrides: Any) -> Flask:
    defaults: dict[str, Any] = {
        "env": env,
        "public_url": PUBLIC_URL if env == "production" else "",
        "payment_gateway": "sandbox",
        "redis_url": REDIS_URL,
        "RATELIMIT_STORAGE_URI": "memory://",
    }
    app = make_app(backend, **{**defaults, **overrides})
    app.extensions["portal.jobs"] = ManualQueue(app)
    return app


@contextmanager
def shared_transaction(*apps: Flask) -> Iterator[None]:
    """Every app works in one transaction, rolled back afterwards: what one app (one key, one
    configuration) wrote, the next sees, as after a restart."""
    first = apps[0].extensions["portal.db"]
    connection = first.engine.connect()
    outer = connection.begin()
    originals = [(app, app.extensions["portal.db"].sessionmaker) for app in apps]
    for app in apps:
        app.extensions["portal.db"].sessionmaker = sessionmaker(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        app.extensions["portal.clock"] = clock.Clock()
    limiter.reset()
    try:
        yield
    finally:
        for app, original in originals:
            app.extensions["portal.db"].sessionmaker = original
        outer.rollback()
        connection.close()


def dispose(*apps: Flask) -> None:
    """Close what the apps hold open: database pools, and their queue's Redis connections."""
    for app in apps:
        app.extensions["portal.db"].engine.dispose()
        queue = app.extensions["portal.jobs"]
        if isinstance(queue, RQJobQueue):
            queue.close()
