"""Logs: one JSON object per line (or readable text in development), with the request id, the
user and company ids, and never a secret.

Standard library logging, configured once per process by `configure` (create_app calls it, so
the web app, every `flask` command and `flask jobs worker` share it): one handler on the root
logger, writing to the current stderr, with the JSON (or text) formatter and the redaction
filter. Calling it again (create_app runs many times in tests) replaces that one handler, never
stacks another; a root logger that already has someone else's handlers (pytest's caplog, an
embedding host) keeps them and gets none of ours, as `logging.basicConfig` would.

What a line knows of its request or job lives in one context variable (`fields`): the request
lifecycle (portal/web.py) sets the request id, method, path and endpoint, `tenancy.bind` the
user and company ids, the worker (workers/jobs.py) the job, its work id and the request id the
work was asked for in (the outbox keeps it). Plain Python, no Flask: services may read it.

Secrets are kept out in two walls: no log call passes one (tests/web/test_logs.py signs in,
pays and issues tokens and looks for each in everything logged), and `redact` replaces what
looks like one (API tokens, signed tokens and cookies, card numbers, `password=…` and the like,
the token in a reset, invitation, download or unsubscribe link) in every message and exception.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_LENGTH = 128
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:=+/@-]{1,128}")
REDACTED = "[redacted]"

# The context of whatever runs now (a request, a job): request_id, user_id, company_id, method,
# path, endpoint, status, job, work_id. One immutable mapping, replaced whole on every change.
fields: ContextVar[Mapping[str, Any]] = ContextVar("portal_log_fields", default={})  # noqa: B039
CONTEXT_KEYS = (
    "request_id",
    "user_id",
    "company_id",
    "method",
    "path",
    "endpoint",
    "status",
    "job",
    "work_id",
)


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-ID when it is sane (1 to 128 characters of letters, digits and
    `._:=+/@-`: nothing that could break a log line or a header), else a new one."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return new_request_id()


def current(name: str) -> Any:
    """One field of the current context (None when unknown)."""
    return fields.get().get(name)


def bind(**values: Any) -> None:
    """Add fields to the current context (until the request or job's context ends)."""
    fields.set({**fields.get(), **values})


def begin(**values: Any) -> Token[Mapping[str, Any]]:
    """Start a fresh context (a request's); `end` with the token brings back the one before."""
    return fields.set(dict(values))


def end(token: Token[Mapping[str, Any]]) -> None:
    try:
        fields.reset(token)
    except ValueError:  # ended in another context than it began in: start afresh
        fields.set({})


@contextlib.contextmanager
def context(**values: Any) -> Iterator[None]:
    """A fresh context for a request or a job: `values` only, and whatever `bind` adds inside;
    the one before it is back afterwards."""
    token = fields.set(dict(values))
    try:
        yield
    finally:
        fields.reset(token)


# redaction ----------------------------------------------------------------------------------

# Paths whose last part is a secret (the link in a mail): the part is replaced, the route kept.
# tests/web/test_logs.py fails when a route takes a token that no prefix here covers.
SECRET_PATH_PREFIXES = (
    "/password/reset/",
    "/invitations/",
    "/portal/download/",
    "/portal/profile/email/",
    "/unsubscribe/",
    "/autopay/skip/",
    "/security/not-me/",
)
_SECRET_PATH = re.compile(
    "(" + "|".join(re.escape(p) for p in SECRET_PATH_PREFIXES) + r")[^/?#\s\"'<>]+"
)
_API_TOKEN = re.compile(r"(?<![A-Za-z0-9])(pt|ark)_[A-Za-z0-9_-]{8,}")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
# itsdangerous' signed values: the session cookie, CSRF tokens, reset/invitation/download links
# ("payload.timestamp.signature", the cookie's payload may start with "." when compressed).
_SIGNED = re.compile(
    r"(?<![A-Za-z0-9_.-])\.?[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{16,}"
)
_NAMED = re.compile(
    r"(?i)\b(password\w*|passwd|secret\w*|\w*token|api[_-]?key|code|otp|totp|recovery[_-]?codes?"
    r"|cvc|cvv2?|card[_-]?number|cookie|set-cookie|session|sid|authorization|x-csrftoken)"
    r"(\"?'?\s*[:=]\s*\"?'?)(?!\[redacted\])([^\s\"'&,;)}\[\]]+)"
)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]*:)[^@\s/]+@")
_CARD = re.compile(r"(?<![0-9A-Za-z._])(?:\d[ -]?){12,18}\d(?![0-9A-Za-z_])")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


def redact(text: str) -> str:
    """`text` with whatever looks like a secret replaced (the second wall: log calls pass none)."""
    text = _SECRET_PATH.sub(lambda m: m.group(1) + REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _NAMED.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _API_TOKEN.sub(lambda m: f"{m.group(1)}_{REDACTED}", text)
    text = _SIGNED.sub(REDACTED, text)
    return _CARD.sub(_card, text)


class Redact(logging.Filter):
    """Rewrites a record's message, exception and stack text through `redact` (every handler
    after this one sees the redacted record too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format: keep what there is, never lose the line
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# formatters ---------------------------------------------------------------------------------


def _utc(created: float) -> str:
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    text = record.exc_text or ""
    if record.stack_info:
        text = f"{text}\n{record.stack_info}".strip()
    return text or None


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, request_id
    (null outside a request or job), then what is known of it (user_id, company_id, method,
    path, endpoint, status, job, work_id) and the exception text, if any."""

    def format(self, record: logging.LogRecord) -> str:
        context = fields.get()
        line: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": context.get("request_id"),
        }
        for key in CONTEXT_KEYS[1:]:
            if context.get(key) is not None:
                line[key] = context[key]
        duration = getattr(record, "duration_ms", None)
        if duration is not None:
            line["duration_ms"] = duration
        exception = _exception_text(self, record)
        if exception:
            line["exception"] = exception
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Development's readable line: time, level, logger, [request id user company], message."""

    def format(self, record: logging.LogRecord) -> str:
        context = fields.get()
        tags = " ".join(
            f"{key}={context[key]}"
            for key in ("request_id", "user_id", "company_id", "job", "work_id")
            if context.get(key) is not None
        )
        time = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        text = f"{time} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if tags:
            text += f"  [{tags}]"
        exception = _exception_text(self, record)
        return f"{text}\n{exception}" if exception else text


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a line is written (a test runner swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def formatter(log_format: str) -> logging.Formatter:
    return TextFormatter() if log_format == "text" else JsonFormatter()


def handler(log_format: str = "json", stream: TextIO | None = None) -> logging.Handler:
    """A handler as the portal's: its formatter and the redaction filter (tests capture with
    one on a StringIO)."""
    made: logging.Handler = _Stderr() if stream is None else logging.StreamHandler(stream)
    made.setFormatter(formatter(log_format))
    made.addFilter(Redact())
    setattr(made, _OURS, True)
    return made


_OURS = "_portal_logs"
_configured: dict[str, str] = {}


def configure(log_format: str, level: str) -> bool:
    """Send the root logger's records to stderr in `log_format` from `level` up. Idempotent:
    the same call again changes nothing; another format or level replaces our one handler.
    False (and nothing changed) when someone else's handlers are on the root logger already."""
    # Whoever handles the output: SQL is never logged (its DEBUG lines hold result rows), nor
    # alembic's chatter.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _OURS, False)]
    if not ours and root.handlers:
        return False
    wanted = {"format": log_format, "level": level}
    if ours and _configured == wanted:
        return True
    for old in ours:
        root.removeHandler(old)
    root.addHandler(handler(log_format))
    root.setLevel(level)
    _configured.clear()
    _configured.update(wanted)
    return True


# gunicorn -------------------------------------------------------------------------------------


class AccessFormatter(logging.Formatter):
    """gunicorn's access log, one line per request: its id (the X-Request-ID the portal
    answered with), remote address, method, path (secret parts redacted; never the query
    string, which may hold what a person typed or a token), status, duration in ms, bytes sent,
    user agent. gunicorn hands the line's values over as the record's args (its "atoms")."""

    def __init__(self, text: bool = False) -> None:
        super().__init__()
        self.text = text

    def format(self, record: logging.LogRecord) -> str:
        atoms: Mapping[str, Any] = record.args if isinstance(record.args, Mapping) else {}

        def atom(name: str) -> Any:
            value = atoms.get(name)
            return None if value in (None, "-") else value

        status = atom("s")
        request_id = atom("{x-request-id}o")
        line: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "request_id": request_id if isinstance(request_id, str) else None,
            "remote_addr": atom("h"),
            "method": atom("m"),
            "path": redact(str(atom("U") or "")),
            "status": int(status) if str(status or "").isdigit() else status,
            "duration_ms": atom("M"),
            "bytes": atom("B"),
            "user_agent": redact(str(atom("a") or "")) or None,
        }
        line["message"] = f"{line['method']} {line['path']} {line['status']}"
        if self.text:
            return (
                f"{datetime.fromtimestamp(record.created, UTC):%H:%M:%S} ACCESS  "
                f"{line['remote_addr']} {line['message']} {line['bytes']} bytes "
                f"{line['duration_ms']} ms  [request_id={line['request_id']}]"
            )
        return json.dumps(line, ensure_ascii=False, default=str)


def gunicorn_logconfig(environ: Mapping[str, str]) -> dict[str, Any]:
    """gunicorn's `logconfig_dict` (gunicorn.conf.py): its own lines (gunicorn.error) as the
    portal's, its access log through `AccessFormatter`, in LOG_FORMAT (json unless "text").
    The root logger is left without handlers: the app's `configure` puts the portal's there."""
    text = environ.get("LOG_FORMAT", "").strip().lower() == "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "INFO", "handlers": []},
        "loggers": {
            "gunicorn.error": {
                "level": environ.get("GUNICORN_LOG_LEVEL", "info").upper(),
                "handlers": ["error"],
                "propagate": False,
            },
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
        "filters": {"redact": {"()": "portal.logs.Redact"}},
        "formatters": {
            "portal": {"()": "portal.logs.TextFormatter" if text else "portal.logs.JsonFormatter"},
            "access": {"()": "portal.logs.AccessFormatter", "text": text},
        },
        "handlers": {
            "error": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "portal",
                "filters": ["redact"],
            },
            "access": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "access",
            },
        },
    }


# Sentry ---------------------------------------------------------------------------------------

_SECRET_KEYS = re.compile(
    r"(?i)password|passwd|secret|token|cookie|csrf|authorization|session|code|otp|cvc|cvv|card"
)


def scrub(value: Any, key: str = "") -> Any:
    """`value` (an event of Sentry, any depth) with secrets replaced: a value under a key that
    names one, and whatever `redact` finds in any text."""
    if key and _SECRET_KEYS.search(key) and isinstance(value, (str, int, float, bytes)):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(item) for item in value]
    return value


def before_send(event: dict[str, Any], _hint: Any) -> dict[str, Any]:
    """Sentry's last look before an event leaves: secrets scrubbed, the request id a tag."""
    scrubbed: dict[str, Any] = scrub(event)
    request = scrubbed.get("request")
    if isinstance(request, dict):
        request.pop("cookies", None)
        request.pop("data", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            for name in list(headers):
                if name.lower() in {"cookie", "authorization", "x-csrftoken"}:
                    headers[name] = REDACTED
    request_id = current("request_id")
    if request_id:
        tags = scrubbed.get("tags")
        if not isinstance(tags, dict):
            tags = scrubbed["tags"] = {}
        tags.setdefault("request_id", request_id)
    return scrubbed


def before_breadcrumb(crumb: dict[str, Any], _hint: Any) -> dict[str, Any]:
    scrubbed: dict[str, Any] = scrub(crumb)
    return scrubbed


def init_sentry(dsn: str, environment: str) -> bool:
    """Sentry, when SENTRY_DSN is set: errors (and error log lines) with no personal data, no
    request bodies or local variables, secrets scrubbed, the request id as a tag."""
    if not dsn:
        return False
    # function-level: sentry_sdk (and its Flask integration) loads only when a DSN is set
    import sentry_sdk

    # send_default_pii is left unset, which is False (2.75 deprecates passing it: it warns):
    # no user, cookies or client address; its event scrubber stays on besides ours.
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=before_send,  # type: ignore[arg-type]
        before_breadcrumb=before_breadcrumb,
        traces_sample_rate=0.0,
    )
    return True
