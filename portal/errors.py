"""Error pages in the runbook's words. No stack traces reach a user."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import (
    Flask,
    Response,
    current_app,
    g,
    has_request_context,
    render_template,
    request,
)
from flask.globals import request_ctx
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError, SecurityError

from portal import api
from portal.extensions import settings
from portal.web import wants_fragment

log = logging.getLogger(__name__)


def _messages() -> dict[int, tuple[str, str]]:
    return {
        400: (_("Invalid request"), _("Invalid payment data. Check your input.")),
        401: (_("Session expired"), _("Session expired. Please log in again.")),
        403: (_("Access restricted"), _("You don't have permission to access this page.")),
        404: (_("Not found"), _("We couldn't find that page.")),
        405: (_("Not allowed"), _("That action isn't available here.")),
        413: (_("Too large"), _("That upload is too large.")),
        429: (_("Too many requests"), _("Too many attempts. Please wait a moment and try again.")),
        500: (_("Something went wrong"), _("Something went wrong on our side. Please try again.")),
        503: (_("Unavailable"), _("The portal is briefly unavailable. Please try again soon.")),
    }


def _ensure_url_adapter() -> None:
    """A request whose Host header Flask refused (not in TRUSTED_HOSTS, or malformed) has no URL
    adapter: Flask could not bind one to that host. Every url_for on the error page (the layout's
    stylesheet, navigation, forms) then raised, inside the error handler itself, and the answer
    was a bare 500. Such a request gets an adapter bound to the portal's own name (PUBLIC_URL),
    so its error page links to the real portal and nothing is built from the refused header."""
    context = request_ctx._get_current_object()  # type: ignore[attr-defined]
    if context.url_adapter is not None:
        return
    public = urlsplit(settings().public_url)
    context.url_adapter = current_app.url_map.bind(
        public.netloc,
        script_name=public.path or "/",
        url_scheme=public.scheme,
    )


def render_error(status: int, message: str | None = None) -> tuple[str, int]:
    if has_request_context():
        _ensure_url_adapter()
    messages = _messages()
    title, default = messages.get(status, messages[500] if status >= 500 else messages[400])
    # An htmx request swaps only a region: it gets the message as a fragment, with Retry.
    template = "errors/_fragment.html" if wants_fragment() else "errors/error.html"
    return (
        render_template(template, status=status, title=title, message=message or default),
        status,
    )


def _http_error(error: HTTPException) -> Response | tuple[str, int]:
    if has_request_context() and api.is_api_request():
        return api.from_http_error(error)
    status = error.code or 500
    # A route's loader says what was missing (web.or_404(found, _("Invoice not found.")));
    # a rate limit's description names the limit, which is not for users.
    custom = error.description if error.description != type(error).description else None
    if status == 429:
        custom = None
    return render_error(status, custom)


def _untrusted_host(_error: SecurityError) -> Response | tuple[str, int]:
    """The runbook's 400 page; the refused name is neither echoed nor logged. The page's own
    styles and scripts are served whatever the name (they are the same for everyone), so it
    renders as every other page does."""
    static = f"{current_app.static_url_path}/"
    if request.method == "GET" and request.path.startswith(static):
        try:
            return current_app.send_static_file(request.path.removeprefix(static))
        except HTTPException as error:  # no such file: raised here, no handler would see it
            return _http_error(error)
    return render_error(
        400, _("This address doesn't serve the Billing Portal. Check the link you followed.")
    )


def _csrf_error(_error: CSRFError) -> Response | tuple[str, int]:
    if api.is_api_request():
        return api.problem_response(
            api.Problem(403, _("Send the X-CSRFToken header of your signed-in page."))
        )
    return render_error(400, _("Your form expired. Reload the page and try again."))


def _problem(problem: api.Problem) -> Response:
    """An API route's (or its authentication's) refusal. A 5xx keeps nothing."""
    if problem.status >= 500:
        session = g.get("db_session")
        if session is not None:
            session.rollback()
    return api.problem_response(problem)


def _server_error(error: Exception) -> Response | tuple[str, int]:
    original = getattr(error, "original_exception", None) or error
    log.exception("unhandled error", exc_info=original)
    # Whatever failed may have left the request's transaction unusable (a failed flush, an
    # aborted PostgreSQL transaction): nothing of it stands, and the page reads afresh.
    session = g.get("db_session")
    if session is not None:
        session.rollback()
    if has_request_context() and api.is_api_request():
        return api.problem_response(api.Problem(500))
    return render_error(500)


def init_app(app: Flask) -> None:
    app.register_error_handler(SecurityError, _untrusted_host)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(api.Problem, _problem)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InternalServerError, _server_error)
    app.register_error_handler(Exception, _server_error)
