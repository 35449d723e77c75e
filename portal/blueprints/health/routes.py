"""Liveness, readiness and Prometheus metrics for operators."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, jsonify, request
from sqlalchemy import text

from portal.extensions import Database, settings

bp = Blueprint("health", __name__)

_requests: dict[tuple[str, int], int] = {}
_latency_sum: dict[str, float] = {}


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    checks: dict[str, str] = {}
    try:
        with Database.get().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"error: {type(error).__name__}"
    redis_url = settings().redis_url
    if redis_url:
        from redis import Redis

        try:
            Redis.from_url(redis_url, socket_timeout=1).ping()
            checks["redis"] = "ok"
        except Exception as error:
            checks["redis"] = f"error: {type(error).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503


@bp.get("/metrics")
def metrics() -> Response:
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
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")


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
        response.headers["Server-Timing"] = f"app;dur={elapsed * 1000:.1f}"
    return response


@bp.record_once
def _install(state: object) -> None:
    app: Flask = state.app  # type: ignore[attr-defined]
    app.before_request(_start_timer)
    app.after_request(_count)
