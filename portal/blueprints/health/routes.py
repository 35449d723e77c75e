"""Liveness, readiness and Prometheus metrics for operators.

`/healthz` and `/readyz` say only ok or not ok, and `/readyz` whether Redis answers (what
failed, and why, goes to the log, never to whoever asks). Outside development `/metrics` wants
`Authorization: Bearer <METRICS_TOKEN>` and does not exist at all without METRICS_TOKEN; what it
exports is portal/metrics.py's, plus the backlog read as it is asked (`_Backlog`). Timings
leave in a `Server-Timing` header only in development: elsewhere a response's own timing could
tell a guesser what the server did.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, abort, g, jsonify, request
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from portal import clock, flags
from portal import metrics as portal_metrics
from portal.config import Settings
from portal.extensions import Database, settings
from portal.services import outbox
from workers.queue import WEB_TIMEOUT, connect, get_queue

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

# How long a scrape waits for the database's backlog figures (PostgreSQL's statement_timeout)
# before it answers without them: well inside Prometheus' 10 s scrape timeout.
SCRAPE_DATABASE_TIMEOUT_MS = 2000

# Methods counted by name; anything else is "other" (a client may send any token).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


def _failed(check: str, error: Exception, level: int = logging.ERROR) -> None:
    log.log(level, "readiness: %s check failed: %s: %s", check, type(error).__name__, error)


def _redis_answers(redis_url: str) -> bool:
    try:
        with connect(redis_url, WEB_TIMEOUT) as client:
            client.ping()
    except Exception as error:
        _failed("redis", error, logging.WARNING)
        return False
    return True


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the database answers: the portal serves without Redis (rate limits counted
    in memory, background work waiting in the outbox), so Redis is a named check that does not
    decide. `work` says whether background work is late (waiting more than a minute past its
    time: Redis away, or no worker)."""
    ready = True
    answer: dict[str, object] = {}
    try:
        with Database.get().sessionmaker() as session:
            session.execute(text("SELECT 1"))
            late = outbox.late(session, clock.now())
        answer["work"] = "late" if late else "ok"  # how many: /metrics (portal_work_late)
    except Exception as error:
        _failed("database", error)
        ready = False
    answer = {"status": "ready" if ready else "not ready", **answer}
    redis_url = settings().redis_url
    if redis_url:
        answer["redis"] = "ok" if _redis_answers(redis_url) else "unreachable"
    return jsonify(answer), 200 if ready else 503


def _metrics_allowed(config: Settings) -> bool:
    """Development: anyone on the machine. Elsewhere: the bearer of METRICS_TOKEN only."""
    if config.is_development:
        return True
    if not config.metrics_token:
        abort(404)  # metrics are off (said at start-up)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Digests of equal length: the comparison says nothing about the token, not even its length.
    expected = hashlib.sha256(config.metrics_token.encode()).digest()
    offered = hashlib.sha256(given.strip().encode()).digest()
    return hmac.compare_digest(offered, expected) and scheme.lower() == "bearer"


class _Backlog(Collector):
    """What is read at scrape time: the outbox's due work and its age (the database), the RQ
    queue's depth (Redis, with the web's short timeout). A source that does not answer is left
    out of the answer and logged: a scrape never fails because of it."""

    def __init__(self, sessions: sessionmaker[Session], redis_url: str | None) -> None:
        self.sessions = sessions
        self.redis_url = redis_url

    def collect(self) -> Iterator[Metric]:
        try:
            with self.sessions() as session:
                if session.get_bind().dialect.name == "postgresql":
                    # A table locked (a migration) or a database gone slow: give up on these
                    # lines rather than hold the scrape (and this worker) until it answers.
                    session.execute(
                        text("SELECT set_config('statement_timeout', :ms, true)"),
                        {"ms": str(SCRAPE_DATABASE_TIMEOUT_MS)},
                    )
                backlog = outbox.backlog(session, clock.now())
        except Exception as error:
            _failed("metrics database", error, logging.WARNING)
        else:
            yield GaugeMetricFamily(
                "portal_work_late",
                "Background work waiting more than a minute past its time.",
                value=backlog.late,
            )
            yield GaugeMetricFamily(
                "portal_outbox_due",
                "Background work due and waiting for a worker (pending or queued).",
                value=backlog.due,
            )
            age = 0.0
            if backlog.oldest_due_at is not None:
                age = max((clock.now() - backlog.oldest_due_at).total_seconds(), 0.0)
            yield GaugeMetricFamily(
                "portal_outbox_oldest_due_age_seconds",
                "How long the oldest due work has waited for a worker (0 when none waits).",
                value=age,
            )
        if not self.redis_url:
            return
        try:
            queue = get_queue(self.redis_url, WEB_TIMEOUT)
            with queue.connection:
                depth = int(queue.count)
        except Exception as error:
            _failed("metrics redis", error, logging.WARNING)
        else:
            yield GaugeMetricFamily(
                "portal_queue_depth", "Jobs in the RQ queue, not yet taken.", value=depth
            )


@bp.get("/metrics")
def metrics() -> Response:
    if not _metrics_allowed(settings()):
        refused = Response("Unauthorized\n", status=401, mimetype="text/plain")
        refused.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    backlog = _Backlog(Database.get().sessionmaker, settings().redis_url)
    response = Response(
        portal_metrics.exposition(backlog), content_type=portal_metrics.CONTENT_TYPE
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _count(response: Response) -> Response:
    endpoint = request.endpoint or "unmatched"
    if response.status_code == 503 and g.get(flags.SWITCHED_OFF):
        endpoint = "switched_off"  # a switch at work (flags.note_refusal), not a fault
    method = request.method if request.method in _METHODS else "other"
    portal_metrics.http_requests.labels(endpoint, method, str(response.status_code)).inc()
    started = g.get("request_started")  # set as the request began (portal/web.py)
    if started is not None:
        elapsed = time.perf_counter() - started
        portal_metrics.http_duration.labels(endpoint, method).observe(elapsed)
        if settings().is_development:
            response.headers["Server-Timing"] = f"app;dur={elapsed * 1000:.1f}"
    return response


@bp.record_once
def _install(state: object) -> None:
    app: Flask = state.app  # type: ignore[attr-defined]
    app.after_request(_count)
    config: Settings = app.config["SETTINGS"]
    if not config.is_development and not config.metrics_token:
        log.info("metrics are off: /metrics answers 404 until METRICS_TOKEN is set")
