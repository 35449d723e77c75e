"""The request lifecycle: who is asking, bound to the database session as a tenant scope."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from flask import (
    Flask,
    Response,
    abort,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from portal import clock, logs, tenancy
from portal.db import commit_now, connection_lost
from portal.extensions import Database, db_session, login_manager, settings
from portal.models import PortalUser
from portal.runtime import current_runtime
from portal.services import audit, auth

OUT_OF_BAND = "layouts/_out_of_band.html"
SESSION_TOKEN_KEY = "sid"  # noqa: S105 - a cookie key, not a secret
T = TypeVar("T")
log = logging.getLogger(__name__)
request_log = logging.getLogger("portal.request")


def session_policy() -> auth.SessionPolicy:
    config = settings()
    return auth.SessionPolicy(
        idle=timedelta(minutes=config.session_idle_minutes),
        absolute=timedelta(hours=config.session_absolute_hours),
        lockout_threshold=config.lockout_threshold,
        lockout=timedelta(minutes=config.lockout_minutes),
    )


def _printable(text: str, limit: int) -> str:
    """A header value as the audit log keeps it: no control characters (PostgreSQL refuses a
    NUL), bounded."""
    return "".join(c for c in text if c.isprintable())[:limit]


def request_info() -> audit.RequestInfo:
    return audit.RequestInfo(
        ip_address=_printable(request.remote_addr or "", 64),
        user_agent=_printable(request.user_agent.string or "", 400),
    )


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def wants_fragment() -> bool:
    """The one test for "answer with a fragment": a targeted htmx request. A boosted navigation
    and htmx's history restore (Back to a page it has no snapshot of) both carry HX-Request,
    yet each replaces the whole page, so each gets the whole page."""
    headers = request.headers
    return (
        is_htmx()
        and headers.get("HX-Boosted") != "true"
        and headers.get("HX-History-Restore-Request") != "true"
    )


def render(
    page: str,
    context: Mapping[str, Any],
    /,
    *,
    fragments: Mapping[str, str] | None = None,
    status: int = 200,
) -> Response:
    """The one HTMX convention. A page is built from named partials; `fragments` maps the id of
    an element a targeted htmx request may swap (its `HX-Target` header) to the partial that
    renders it. A targeted request for one of them gets that partial, with the same context;
    anything else (a plain request, a boosted one, a history restore, an unknown target) gets
    the whole page. A fragment for a signed-in user carries `OUT_OF_BAND` after it (the
    header's notification badge, swapped out of band). Every response varies on HX-Request
    (`init_app`)."""
    template = page
    if fragments and wants_fragment():
        template = fragments.get(request.headers.get("HX-Target", ""), page)
    body = render_template(template, **context)
    if template != page and g.get("user") is not None:
        # A fragment replaces part of a page: what the layout shows of the user's state (the
        # header's unread count) comes along out of band, so it never goes stale.
        body += render_template(OUT_OF_BAND)
    return make_response(body, status)


def go(location: str, *, code: int = 303, htmx_status: int = 204) -> Response:
    """Send the browser elsewhere: a redirect, or for htmx an HX-Redirect (a whole page), with
    `htmx_status` (htmx follows HX-Redirect whatever the status: a refusal may say 401)."""
    if is_htmx():
        response = make_response("", htmx_status)
        response.headers["HX-Redirect"] = location
        return response
    return redirect(location, code=code)  # type: ignore[return-value]


def done(back: str) -> Response:
    """An action with nothing to show (e.g. "Stay signed in", posted with hx-swap="none"):
    htmx gets 204 and the page stays as it is; a plain form goes `back`."""
    if is_htmx():
        return make_response("", 204)
    return redirect(back)  # type: ignore[return-value]


def not_found(message: str) -> NoReturn:
    abort(404, description=message)


def or_404(found: T | None, message: str) -> T:
    """The one loader's edge: what a tenant-scoped lookup found, or 404 with the page's copy.
    A foreign id looks exactly like a missing one (tenancy filters every select)."""
    if found is None:
        not_found(message)
    return found


def public_link(path: str) -> str:
    """An absolute link from PUBLIC_URL: the runtime's link builder (portal/runtime.py), which
    mail, gateways and jobs use; this is its name for a request."""
    return current_runtime().links.public(path)


def safe_next(target: str | None) -> str | None:
    """Only a local path may follow sign-in (no scheme, no host, no protocol-relative //)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return None
    try:
        parts = urlsplit(target)
    except ValueError:  # e.g. "/[" in what would be the host
        return None
    if parts.scheme or parts.netloc:
        return None
    return target


FORM_MIMETYPE = "application/x-www-form-urlencoded"
MULTIPART_MIMETYPE = "multipart/form-data"


def _holds_nul(value: Any) -> bool:
    """Whether any string (key or value) of a parsed JSON body holds NUL (iterative: any depth)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _refuse_nul() -> None:
    """No text the portal keeps may hold NUL (PostgreSQL refuses it) and nobody types one: a
    path, query or form carrying one is refused whole (400), before any route reads it. A
    url-encoded body is read raw, so the form is still parsed as usual (and a webhook's body
    intact); any other form (multipart) is read as parsed, names, values and file names; a
    JSON body (the API) as parsed, every key and string."""
    encoded = [request.query_string]  # as sent: a NUL is "%00" ("%2500" is the text "%00")
    if request.mimetype == FORM_MIMETYPE:
        encoded.append(request.get_data(cache=True))
    if "\x00" in request.path or any(b"\x00" in part or b"%00" in part for part in encoded):
        abort(400)
    # A body nobody reads (a GET's) stays unread: reading a large one answered a 413.
    has_body = request.method not in {"GET", "HEAD", "OPTIONS"}
    if has_body and request.is_json and _holds_nul(request.get_json(silent=True)):
        abort(400)  # a JSON body's strings and keys too ("\u0000" decodes to NUL)
    if request.mimetype == MULTIPART_MIMETYPE:
        # A part whose name could not be read (a line break in it) has the name None, which
        # no route asks for and Flask-WTF's CSRF check trips over: refused as well.
        texts = [*request.form.keys(), *request.form.values(), *request.files.keys()]
        texts += [f.filename or "" for f in request.files.values()]
        if any(text is None or "\x00" in text for text in texts):
            abort(400)


def _authenticate() -> None:
    g.user = None
    g.user_session = None
    g.pending_session = None
    if request.endpoint in {"static", "health.healthz", "health.readyz", "health.metrics"}:
        return
    token = session.get(SESSION_TOKEN_KEY)
    if not token:
        return
    db = db_session()
    now = clock.now()
    record = auth.load_session(db, token, policy=session_policy(), now=now)
    if record is None:
        session.pop(SESSION_TOKEN_KEY, None)
        g.session_expired = True
        return
    # Even half signed in, the session's data boundary is the user's own scope.
    tenancy.bind(db, tenancy.scope_for_user(record.user))
    if not record.mfa_verified:
        g.pending_session = record  # password given, second factor still to come
        return
    g.user = record.user
    g.user_session = record
    if auth.touch_session(db, record, now):
        # Once a minute per session. In a GET on SQLite the read above ends before the touch
        # writes, which waits for the write lock (portal/db.py); riding on the edge commit would
        # keep that lock for the whole page, every other writer waiting on its rendering.
        commit_now(db, "the session touch must not hold SQLite's write lock through a GET")


def _begin_log_context() -> None:
    """The request's id (its sane X-Request-ID, else a new one) and what it asks, in every log
    line written while it runs (portal/logs.py); `tenancy.bind` adds the user and company."""
    # A request run again after a lost connection (PortalApp) keeps the id it was given.
    request_id = g.get("request_id") or logs.request_id_from(
        request.headers.get(logs.REQUEST_ID_HEADER)
    )
    g.request_id = request_id
    g.request_started = time.perf_counter()
    g.log_context = logs.begin(
        request_id=request_id,
        method=request.method,
        path=logs.redact(request.path),
        endpoint=request.endpoint,
    )


def _request_id_header(response: Response) -> Response:
    """Every answer names its request (pages, the API, errors): what support asks for."""
    request_id = g.get("request_id")
    if request_id:
        response.headers[logs.REQUEST_ID_HEADER] = request_id
        logs.bind(status=response.status_code)
    return response


# Probes and metrics scrapes come every few seconds: their lines only at DEBUG.
_QUIET_ENDPOINTS = frozenset({"static", "health.healthz", "health.readyz", "health.metrics"})


def _log_request(response: Response) -> Response:
    """One line per request, after its commit, with what the context knows (request id, user,
    company, method, path, endpoint, status) and how long the portal took: the activity log of
    the logs. (gunicorn's access line adds bytes and the time it waited.)"""
    started = g.get("request_started")
    if started is not None:
        took = round((time.perf_counter() - started) * 1000, 1)
        level = logging.DEBUG if request.endpoint in _QUIET_ENDPOINTS else logging.INFO
        request_log.log(
            level,
            "%s %s %s %.1f ms",
            request.method,
            logs.current("path"),
            response.status_code,
            took,
            extra={"duration_ms": took},
        )
    return response


def _end_log_context(_error: BaseException | None) -> None:
    token = g.pop("log_context", None)
    if token is not None:
        logs.end(token)


def _commit_unit(response: Response) -> Response:
    """The unit of work's edge: whatever the route did commits here, once, when it answered
    (a 2xx, a redirect, or a 4xx of its own: a failed sign-in's count and audit record stand).
    A 5xx answer (an unhandled error; errors.py has rolled back) keeps nothing. This runs
    before a byte is sent: should the commit fail, the error handler answers 500 instead
    (and runs this again, with nothing left to keep). Routes and services never commit; the
    few commits that must stand earlier are `portal.db.commit_now`, each with its reason."""
    db: Session | None = g.get("db_session")
    if db is None:
        return response
    if response.status_code >= 500:
        db.rollback()
    else:
        db.commit()
    return response


# A dropped database connection ---------------------------------------------------------------
#
# A request that only reads (GET, HEAD) and whose database work fails because the connection was
# lost (`portal.db.connection_lost`: PostgreSQL restarted under it, or refuses while it comes
# back) runs again whole, on a new session, after each of RETRY_PAUSES; each retry is logged at
# WARNING with its attempt. The retry wraps Flask's `full_dispatch_request`, the one call that
# runs a request's hooks, view, error handlers and edge commit, and nothing more:
# - nothing has been sent yet (the status and headers leave after it returns), so an attempt can
#   be thrown away whole; a body streamed later is not retried (no route reads the database
#   while streaming);
# - the request context stays (the parsed request, the cookie session, flashed messages), and
#   `g`, where the request keeps its work (the database session and unit of work, the user and
#   session row, flags, the unread count, the locale, the limiter's marks), is put back as it
#   was before the first attempt: no later attempt sees an object of the lost session;
# - the error handlers still see every other error as before: only a lost connection, on an
#   attempt that is not the last, passes them by (`handle_user_exception`) to the loop.
# A write (POST, PUT, PATCH, DELETE) never runs twice: its transaction may have committed before
# the connection went. It, and a read whose attempts ran out, gets the "briefly unavailable"
# answer (503 with Retry-After, portal/errors.py). One cost: a retried request counts once more
# against a rate limit.

RETRIED_METHODS = frozenset({"GET", "HEAD"})
RETRY_PAUSES = (0.1, 0.3)  # seconds before the second and the third attempt
_RETRYING = "portal_retry_on_lost_connection"  # on g: this attempt is not the last


def _describe(error: Exception) -> str:
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return f"{type(original).__name__}: {lines[0] if lines else ''}"


class PortalApp(Flask):
    """The portal's Flask: a request that only reads survives a dropped database connection."""

    def full_dispatch_request(self) -> Response:
        if request.method not in RETRIED_METHODS:
            return super().full_dispatch_request()
        request_globals = g._get_current_object()
        before = dict(vars(request_globals))
        attempts = len(RETRY_PAUSES) + 1
        for attempt, pause in enumerate(RETRY_PAUSES, start=1):
            setattr(g, _RETRYING, True)
            try:
                return super().full_dispatch_request()
            except Exception as error:
                if not connection_lost(error):
                    raise
                log.warning(
                    "database connection lost: %s %s, attempt %d of %d (%s): "
                    "trying again in %.1f s",
                    request.method,
                    request.path,
                    attempt,
                    attempts,
                    _describe(error),
                    pause,
                )
            # The attempt's log context ends with it; the request keeps its one id.
            request_id = g.get("request_id")
            context = g.get("log_context")
            if context is not None:
                logs.end(context)
            Database.start_over()
            vars(request_globals).clear()
            vars(request_globals).update(before)
            if request_id:
                g.request_id = request_id
            time.sleep(pause)
        return super().full_dispatch_request()  # the last: a lost connection is answered 503

    def handle_user_exception(self, e: Exception) -> HTTPException | Any:
        if g.get(_RETRYING) and connection_lost(e):
            raise  # past the error handlers, to full_dispatch_request's next attempt
        return super().handle_user_exception(e)


def _load_user(_request: object) -> PortalUser | None:
    user: PortalUser | None = g.get("user")
    return user


def _unauthorized() -> BaseResponse:
    if g.get("session_expired"):
        flash(_("Session expired. Please log in again."), "warning")
    target = url_for("auth.login", next=request.full_path if request.method == "GET" else None)
    return go(target, code=302, htmx_status=401)


def init_app(app: Flask) -> None:
    login_manager.request_loader(_load_user)
    login_manager.unauthorized_handler(_unauthorized)
    # First of all, before Flask-WTF's CSRF check parses the form (the raw body is gone then).
    app.before_request_funcs.setdefault(None, []).insert(0, _refuse_nul)
    # Before that even: a refused request is logged with its id too.
    app.before_request_funcs[None].insert(0, _begin_log_context)
    app.before_request(_authenticate)
    app.teardown_request(_end_log_context)

    app.after_request(_log_request)  # registered first, so it runs last: after the commit
    app.after_request(_commit_unit)

    @app.after_request
    def _vary(response: Response) -> Response:
        response.vary.add("HX-Request")
        response.vary.add("HX-Target")
        response.vary.add("Cookie")
        return response

    # Registered last, so it runs first: the id is on the answer whatever a later hook does.
    app.after_request(_request_id_header)
