"""Liveness, readiness and Prometheus metrics for operators.

`/healthz` and `/readyz` say only ok or not ok, and `/readyz` whether Redis answers (what
failed, and why, goes to the log, never to whoever asks). Outside development `/metrics` wants
`Authorization: Bearer <METRICS_TOKEN>` and does not exist at all without METRICS_TOKEN. Timings
leave in a `Server-Timing` header only in development: elsewhere a response's own timing could
tell a guesser what the server did.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from flask import Blueprint, Flask, Response, abort, g, jsonify, request
from sqlalchemy import text

from portal import clock
from portal.config import Settings
from portal.extensions import Database, settings
from portal.services import outbox
from workers.queue import WEB_TIMEOUT, connect

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

_requests: dict[tuple[str, int], int] = {}
_latency_sum: dict[str, float] = {}


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


@bp.get("/metrics")
def metrics() -> Response:
    if not _metrics_allowed(settings()):
        refused = Response("Unauthorized\n", status=401, mimetype="text/plain")
        refused.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    lines = [
        "# HELP portal_http_requests_total HTTP requests by endpoint and status.",
        "# TYPE portal_http_requests_total counter",
    ]
    for (endpoint, status), count in sorted(_requests.items()):
        lines.append(
            f'portal_http_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}'
        )
    lines += [
        "# HELP portal_http_request_seconds_sum Time spent serving requests, by endpoint.",
        "# TYPE portal_http_request_seconds_sum counter",
    ]
    for endpoint, seconds in sorted(_latency_sum.items()):
        lines.append(f'portal_http_request_seconds_sum{{endpoint="{endpoint}"}} {seconds:.6f}')
    lines += [
        "# HELP portal_work_late Background work waiting more than a minute past its time.",
        "# TYPE portal_work_late gauge",
    ]
    try:
        with Database.get().sessionmaker() as session:
            lines.append(f"portal_work_late {outbox.late(session, clock.now())}")
    except Exception as error:
        _failed("database", error)
    response = Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
    response.headers["Cache-Control"] = "no-store"
    return response


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _count(response: Response) -> Response:
    endpoint = request.endpoint or "unmatched"
    key = (endpoint, response.status_code)
    _requests[key] = _requests.get(key, 0) + 1
    started = g.get("request_started")
    if started is not None:
        elapsed = time.perf_counter() - started
        _latency_sum[endpoint] = _latency_sum.get(endpoint, 0.0) + elapsed
        if settings().is_development:
            response.headers["Server-Timing"] = f"app;dur={elapsed * 1000:.1f}"
    return response


@bp.record_once
def _install(state: object) -> None:
    app: Flask = state.app  # type: ignore[attr-defined]
    app.before_request(_start_timer)
    app.after_request(_count)
    config: Settings = app.config["SETTINGS"]
    if not config.is_development and not config.metrics_token:
        log.info("metrics are off: /metrics answers 404 until METRICS_TOKEN is set")
