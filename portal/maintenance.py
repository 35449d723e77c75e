"""The rollback switch: while `m25_portal` is off, the portal answers a maintenance page.

Every request is answered here, before anything else reads it (sign-in, CSRF, rate limits),
with 503, `Retry-After` (MAINTENANCE_RETRY_AFTER) and `Cache-Control: no-store`: a translated
page in the layout's look that needs no signed-in user (the session is neither read nor ended,
so whoever was signed in still is when the portal is back), for htmx `HX-Refresh: true` too (htmx
then loads the whole page, the maintenance page, instead of swapping a region), and under /api/
a problem (RFC 9457). What keeps answering: static files, /healthz, /readyz, /metrics, the
gateways' webhooks (a payment on its way still settles), the sandbox gateway's own card page
(it plays a gateway's hosted page, which a real gateway keeps serving) and the footer's language
switcher (it only remembers the choice in the session, so the page can be read in another
language).
"""

from __future__ import annotations

import math

from flask import Flask, Response, make_response, render_template, request
from flask_babel import gettext as _
from flask_babel import ngettext
from werkzeug.exceptions import SecurityError

from portal import api, flags, web
from portal.extensions import settings
from portal.web import is_htmx

OPEN_ENDPOINTS = frozenset(
    {"static", "health.healthz", "health.readyz", "health.metrics", "language.change"}
)
OPEN_BLUEPRINTS = frozenset({"webhooks", "sandbox"})


def stays_open() -> bool:
    return request.endpoint in OPEN_ENDPOINTS or request.blueprint in OPEN_BLUEPRINTS


def retry_after() -> int:
    return settings().maintenance_retry_after


def when_to_retry() -> str:
    minutes = max(1, math.ceil(retry_after() / 60))
    return str(
        ngettext(
            "Please try again in about %(num)d minute.",
            "Please try again in about %(num)d minutes.",
            minutes,
        )
    )


def again() -> str:
    """Where "Try again" goes: a GET's own address (path and query), else the portal's start.
    Only a local path (`web.safe_next`): a request for `//elsewhere.example` must not turn the
    portal's own page into a link to another site."""
    script_root = request.script_root
    if request.method == "GET":
        path = request.full_path.removesuffix("?")  # Werkzeug adds "?" when there is no query
        if web.safe_next(path):
            return script_root + path
    return script_root + "/"


def answer() -> Response:
    flags.note_refusal()
    headers = {"Retry-After": str(retry_after()), "Cache-Control": "no-store"}
    if api.is_api_request():
        detail = _("The Billing Portal is down for maintenance.") + " " + when_to_retry()
        response = api.problem_response(api.Problem(503, detail, headers=headers))
        return response
    page = render_template(
        "errors/maintenance.html", retry=when_to_retry(), again=again(), generic_footer=True
    )
    response = make_response(page, 503)
    response.headers.update(headers)
    if is_htmx():
        # htmx reloads the page (whose answer is this page) rather than swapping a region.
        response.headers["HX-Refresh"] = "true"
    return response


def _gate() -> Response | None:
    refused = request.routing_exception
    if isinstance(refused, SecurityError):
        # A Host name the portal does not answer to (TRUSTED_HOSTS): its 400 page, off or not
        # (this page's links could not be built for it: it was a 500).
        raise refused
    if stays_open() or flags.enabled(flags.MASTER):
        return None
    return answer()


def init_app(app: Flask) -> None:
    hooks = app.before_request_funcs.setdefault(None, [])
    # Right after the refusal of NUL (portal/web.py, the first hook) and before the CSRF check,
    # the rate limits and sign-in: none of them has anything to say while the portal is off.
    first = hooks.index(web._refuse_nul) + 1 if web._refuse_nul in hooks else 0
    hooks.insert(first, _gate)
