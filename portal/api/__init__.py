"""The JSON API's shared parts: one spec, problem answers, who is asking, cursors.

One source of truth: the pydantic models in `portal.api.schemas` (and each blueprint's own)
validate requests and responses through SpecTree (`@spec.validate(...)`), and the same
decorators produce `/api/openapi.json` (OpenAPI 3.1). Errors are `application/problem+json`
(RFC 9457) with the runbook's codes and copy. Routes stay thin: parse (SpecTree did), load
through the tenant-scoped lookups, call a service, answer a model.

Who is asking (`authenticate_portal`, a blueprint's before_request): a bearer token
(`Authorization: Bearer pt_…`, personal or from `login`) or the browser's signed-in session;
an unsafe method on the session needs the `X-CSRFToken` header, exactly as htmx sends it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from flask import Response, current_app, g, request
from flask_babel import gettext as _
from pydantic import BaseModel
from spectree import Response as Answers
from spectree import SecurityScheme, SpecTree
from spectree.models import InType, SecureType, SecuritySchemeData
from werkzeug.exceptions import HTTPException

from portal import clock, tenancy
from portal.extensions import csrf, db_session
from portal.models import ApiToken, TokenScope
from portal.services import api_tokens

PROBLEM_MIMETYPE = "application/problem+json"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_PREFIX = "/api/"
BIGINT = 2**63
T = TypeVar("T")


class ProblemDetail(BaseModel):
    """RFC 9457 problem details, with the fields that failed (if any)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []


class FieldError(BaseModel):
    field: str  # a dotted path into the request ("amount", "invoices.0", "query.after")
    message: str


ProblemDetail.model_rebuild()


class Problem(Exception):
    """Raised anywhere under /api/ to answer a problem (errors.py turns HTTP errors into it)."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        errors: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or "")
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.headers = dict(headers or {})


def _titles() -> dict[int, tuple[str, str]]:
    """Title and default detail per status: the runbook's copy deck."""
    return {
        400: (_("Invalid request"), _("Invalid payment data. Check your input.")),
        401: (_("Session expired"), _("Session expired. Please log in again.")),
        403: (_("Access restricted"), _("You don't have permission to access this page.")),
        404: (_("Not found"), _("We couldn't find that page.")),
        405: (_("Not allowed"), _("That action isn't available here.")),
        409: (_("Conflict"), _("Payment already processed.")),
        413: (_("Too large"), _("That upload is too large.")),
        415: (_("Invalid request"), _("Send the request body as JSON.")),
        422: (_("Validation failed"), _("Payment validation failed.")),
        429: (_("Too many requests"), _("Too many attempts. Please wait a moment and try again.")),
        500: (_("Something went wrong"), _("Something went wrong on our side. Please try again.")),
        503: (_("Unavailable"), _("The portal is briefly unavailable. Please try again soon.")),
    }


def problem_response(problem: Problem) -> Response:
    titles = _titles()
    fallback = titles[500] if problem.status >= 500 else titles[400]
    title, default = titles.get(problem.status, fallback)
    body = ProblemDetail(
        title=title,
        status=problem.status,
        detail=problem.detail or default,
        errors=[FieldError(field=f, message=m) for f, m in problem.errors],
    )
    response = current_app.response_class(
        body.model_dump_json(), status=problem.status, mimetype=PROBLEM_MIMETYPE
    )
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


def from_http_error(error: HTTPException) -> Response:
    """An HTTP error raised under /api/ (abort(404), a rate limit, a CSRF refusal …)."""
    status = error.code or 500
    custom = error.description if error.description != type(error).description else None
    headers = {}
    if status == 429:
        custom = None  # the limit's own description is not for users
        retry = error.get_headers().__iter__()
        headers = {k: v for k, v in retry if k.lower() == "retry-after"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="portal"'
    if status == 405:
        allowed = error.get_response().headers.get("Allow")
        if allowed:
            headers["Allow"] = allowed
    return problem_response(Problem(status, custom, headers=headers))


def is_api_request() -> bool:
    return request.path.startswith(API_PREFIX)


def fail(status: int, detail: str | None = None, **kwargs: Any) -> NoReturn:
    raise Problem(status, detail, **kwargs)


def or_404(found: T | None, detail: str) -> T:
    if found is None:
        raise Problem(404, detail)
    return found


def _validation_errors(error: Any) -> list[tuple[str, str]]:
    found = []
    for item in getattr(error, "errors", lambda: [])():
        where = ".".join(str(part) for part in item.get("loc", ())) or "body"
        found.append((where, str(item.get("msg", "Invalid value."))))
    return found


def _before(_req: Any, _resp: Any, req_validation_error: Any, _instance: Any, *_more: Any) -> None:
    """A request that does not fit its model is a 400 naming each field, in problem form; a
    route that takes a JSON body sent none (a form, nothing at all) is a 415. SpecTree would
    hand such a view `json=None`: every route is spared checking it."""
    if req_validation_error is not None:
        raise Problem(400, _("Check your input."), errors=_validation_errors(req_validation_error))
    view = current_app.view_functions.get(request.endpoint or "")
    metadata = spec.get_function_metadata(view) if view is not None else None
    context = getattr(request, "context", None)
    if metadata is not None and metadata.json is not None and getattr(context, "json", 0) is None:
        raise Problem(415)


spec = SpecTree(
    "flask",
    title="Billing portal API",
    version="1.0.0",
    # SpecTree leaves out of the spec every route under /{path}; the portal serves the spec itself
    # (/api/openapi.json, portal/blueprints/api_docs), so this names no route of ours.
    path="_spectree",
    page_templates={},  # the docs page is the portal's own (portal/blueprints/api_docs)
    annotations=True,
    mode="strict",  # only what is decorated with @spec.validate is described
    before=_before,
    validation_error_status=400,
    # The 400 SpecTree adds to every operation (one taking no input too): the problem `_before`
    # and errors.py answer, not SpecTree's own list of errors.
    validation_error_model=ProblemDetail,
    security_schemes=[
        SecurityScheme(
            name="bearer",
            data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer", bearer_format="pt_…"),
        ),
        SecurityScheme(
            name="session",
            data=SecuritySchemeData(
                type=SecureType.API_KEY, field_in=InType.COOKIE, name="portal_session"
            ),
        ),
        SecurityScheme(
            name="operator",
            data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer", bearer_format="ark_…"),
        ),
    ],
)

PORTAL_SECURITY: dict[str, list[str]] = {"bearer": [], "session": []}


def answers(*, kind: type[Answers] = Answers, limited: bool = True, **codes: Any) -> Answers:
    """An operation's answers for `@spec.validate(resp=...)`: the ones given (HTTP_200=Model,
    HTTP_404=ProblemDetail …) and the problems every operation may answer, so each is declared
    in one place: 401 (who is asking), 429 (the rate limits; `limited=False` where none
    applies) and 503 (the portal switched off, portal/maintenance.py, or a part of it)."""
    common = ["HTTP_401", "HTTP_503"] + (["HTTP_429"] if limited else [])
    for code in common:
        codes.setdefault(code, ProblemDetail)
    return kind(**codes)


def openapi_document() -> dict[str, Any]:
    """The published spec: SpecTree's, with every 4xx/5xx answer typed as problem+json."""
    spec.app = current_app
    document: dict[str, Any] = json.loads(json.dumps(spec.spec))
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            for status, answer in operation.get("responses", {}).items():
                content = answer.get("content", {})
                if status[:1] in {"4", "5"} and "application/json" in content:
                    content[PROBLEM_MIMETYPE] = content.pop("application/json")
    return document


# Who is asking -----------------------------------------------------------------------------


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _sep, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()


def authenticate_portal() -> None:
    """A portal API request's user: a bearer token, else the signed-in browser session. A
    read-only token may only read: any other method is refused here (403), whatever the route
    (a route that changes something lists 403 in its answers)."""
    g.api_token = None
    raw = _bearer()
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "api_public", False):
        return
    if raw is not None:
        db = db_session()
        token = api_tokens.authenticate(db, raw, now=clock.now(), ip=request.remote_addr or "")
        if token is None:
            raise Problem(
                401,
                _("The token is invalid, expired or revoked."),
                headers={"WWW-Authenticate": 'Bearer realm="portal", error="invalid_token"'},
            )
        # Signed in, or half signed in (the code still to come): either way the database
        # session is bound to that user's scope already.
        pending = g.get("pending_session")
        session_user = g.get("user") or (pending.user if pending is not None else None)
        if session_user is not None and session_user.id != token.user_id:
            # The browser is signed in as someone else: the request's scope is theirs already.
            raise Problem(
                401,
                _("This token belongs to another user than the one signed in here."),
                headers={"WWW-Authenticate": 'Bearer realm="portal", error="invalid_token"'},
            )
        tenancy.bind(db, tenancy.scope_for_user(token.user))
        g.user = token.user
        g.user_session = None
        g.api_token = token
        if request.method not in SAFE_METHODS:
            require_write_scope()  # here, once, for every route that changes anything
        return
    if g.get("user") is None:
        raise Problem(401, headers={"WWW-Authenticate": 'Bearer realm="portal"'})
    if request.method not in SAFE_METHODS:
        csrf.protect()  # the browser session: the same CSRF header htmx sends


OPERATOR_SECURITY: dict[str, list[str]] = {"operator": []}


def authenticate_operator() -> None:
    """An `/api/ar/` request: the receivables system's operator key, nothing else (no session).
    It acts for every company, so its queries run with the tenancy system scope."""
    raw = _bearer()
    db = db_session()
    key = api_tokens.authenticate_key(db, raw, now=clock.now()) if raw else None
    if key is None:
        raise Problem(
            401,
            _("The operator key is invalid or revoked."),
            headers={"WWW-Authenticate": 'Bearer realm="receivables"'},
        )
    g.ar_key = key
    g.user = None
    g.user_session = None


def public(view: Callable[..., T]) -> Callable[..., T]:
    """An endpoint anyone may call (`login`): no token or session asked for. Put it outermost
    (above `@spec.validate`)."""
    view.api_public = True  # type: ignore[attr-defined]
    return view


def current_token() -> ApiToken | None:
    token: ApiToken | None = g.get("api_token")
    return token


def require_pay_scope() -> None:
    """A read-only token may not pay (the session and read+pay tokens may)."""
    token = current_token()
    if token is not None and token.scope is not TokenScope.PAY:
        raise Problem(403, _("This token may only read. Create a token that may pay."))


def require_json(body: T | None) -> T:
    """The validated JSON body; SpecTree hands a view None when the body was not JSON (a form
    post, no body at all): that is a 415, not a crash."""
    if body is None:
        raise Problem(415)
    return body


def require_write_scope() -> None:
    """A read-only token may only GET (read-only = GET only); the session and read+pay tokens
    may change what the user may change."""
    token = current_token()
    if token is not None and token.scope is not TokenScope.PAY:
        raise Problem(403, _("This token may only read. Create a token that may change things."))


# Cursors -----------------------------------------------------------------------------------


def encode_cursor(values: Sequence[Any]) -> str:
    """An opaque cursor for keyset pagination: the last row's sort key."""
    raw = json.dumps(list(values), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, shape: Sequence[type]) -> list[Any]:
    """The sort key a cursor carries, checked against the types expected; a 400 otherwise."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeError):
        values = None
    if (
        not isinstance(values, list)
        or len(values) != len(shape)
        or not all(
            isinstance(v, t) and not isinstance(v, bool) for v, t in zip(values, shape, strict=True)
        )
        # what a query can compare: an integer a BIGINT holds, a text with no NUL
        or any(isinstance(v, int) and not -BIGINT <= v < BIGINT for v in values)
        or any(isinstance(v, str) and "\x00" in v for v in values)
    ):
        raise Problem(400, _("That page cursor is not valid."), errors=[("after", "invalid")])
    return values
