"""`/api/portal/statements`: ask for a statement, list them, follow one until its file is ready.

The statements page's service (portal/statements/service.py) and its form's checks
(portal/blueprints/statements/forms.py: the same messages, as a 422 naming each field); the job
runs as the page's does, and the download link is the page's signed link.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from flask import url_for
from flask_babel import gettext as _
from flask_login import current_user
from pydantic import BaseModel, ConfigDict, Field
from werkzeug.datastructures import MultiDict

from portal import api, clock, flags, i18n
from portal.api import PORTAL_SECURITY, ProblemDetail, spec
from portal.api.schemas import PageInfo
from portal.blueprints.api_portal import paging
from portal.blueprints.api_portal.routes import TAGS, bp
from portal.blueprints.statements.forms import StatementForm
from portal.blueprints.statements.routes import _failure_reasons, _link
from portal.extensions import db_session, settings
from portal.models import Statement, StatementFormat, StatementState
from portal.runtime import current_runtime
from portal.statements import service
from portal.web import request_info

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
# The form's fields, as the API names them.
FIELDS = {"start_date": "start_date", "end_date": "end_date", "accounts": "account_ids"}


class StatementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_date: date = Field(description="ISO 8601 date, the first day covered.")
    end_date: date = Field(description="ISO 8601 date, the last day covered (not after today).")
    format: Literal["pdf", "xlsx", "csv"] = "pdf"
    account_ids: list[str] | None = Field(
        default=None,
        max_length=MAX_LIMIT,
        description="Public ids of the billing accounts to cover; left out: all of yours.",
    )


class StatementsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    after: str | None = Field(default=None, max_length=200, description="`next_cursor`.")


class StatementOut(BaseModel):
    id: str
    state: str = Field(description='"queued", "running", "ready", "failed" or "expired".')
    progress: int = Field(description="Percent done while running.")
    start_date: str
    end_date: str
    format: str
    account_ids: list[str]
    created_at: str = Field(description="ISO 8601 date and time.")
    available_until: str | None = Field(description="When a ready file is removed.")
    download_url: str | None = Field(description="Once ready: a signed link to the file.")
    failure_reason: str | None
    poll_url: str


class StatementListOut(BaseModel):
    statements: list[StatementOut]
    page: PageInfo


def _enabled() -> None:
    if not flags.enabled(flags.STATEMENTS):
        flags.note_refusal()
        raise api.Problem(503, _("Statements aren't available right now."))


def statement_out(statement: Statement, names: dict[int, str]) -> StatementOut:
    ready = statement.state is StatementState.READY and statement.storage_key is not None
    failed = statement.state is StatementState.FAILED
    return StatementOut(
        id=statement.public_id,
        state=statement.state.value,
        progress=statement.progress,
        start_date=statement.start_date.isoformat(),
        end_date=statement.end_date.isoformat(),
        format=statement.format.value,
        account_ids=[names[int(i)] for i in statement.account_ids if int(i) in names],
        created_at=statement.created_at.isoformat(),
        available_until=(
            statement.available_until.isoformat() if statement.available_until else None
        ),
        download_url=_link(statement) if ready else None,
        failure_reason=(
            _failure_reasons().get(
                statement.error_code or "", _failure_reasons()["generation_failed"]
            )
            if failed
            else None
        ),
        poll_url=url_for("api_portal.statement", public_id=statement.public_id),
    )


def _account_ids() -> dict[int, str]:
    """The public ids of the accounts in the user's scope (the others stay unnamed)."""
    return {a.id: a.public_id for a in service.accounts(db_session())}


@bp.post("/statements")
@spec.validate(
    json=StatementIn,
    resp=api.answers(
        HTTP_202=StatementOut,
        HTTP_400=ProblemDetail,
        HTTP_403=ProblemDetail,
        HTTP_404=ProblemDetail,
        HTTP_415=ProblemDetail,
        HTTP_422=ProblemDetail,
    ),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def request_statement(json: StatementIn) -> tuple[StatementOut, int]:
    """Ask for a statement of a date range: 202, then poll its poll_url until it is ready."""
    _enabled()
    session = db_session()
    rows = service.accounts(session)
    json = api.require_json(json)
    chosen = json.account_ids if json.account_ids is not None else [a.public_id for a in rows]
    data = MultiDict(
        [
            ("start_date", json.start_date.isoformat()),
            ("end_date", json.end_date.isoformat()),
            ("format", json.format),
            *(("accounts", pid) for pid in chosen),
        ]
    )
    form = StatementForm(
        formdata=data,
        meta={"csrf": False},
        accounts=rows,
        today=clock.today(),
        max_days=settings().statement_max_days,
    )
    if not form.validate():
        errors = [
            (FIELDS.get(name, name), str(message))
            for name, messages in form.errors.items()
            for message in messages
        ]
        raise api.Problem(422, _("Check the statement's dates and accounts."), errors=errors)
    statement = service.request_statement(
        current_runtime(),
        session,
        current_user,
        start=json.start_date,
        end=json.end_date,
        account_ids=form.account_ids,
        fmt=StatementFormat(json.format),
        locale=i18n.text_locale(),
        now=clock.now(),
        request=request_info(),
    )
    return statement_out(statement, {a.id: a.public_id for a in rows}), 202


@bp.get("/statements")
@spec.validate(
    query=StatementsQuery,
    resp=api.answers(
        HTTP_200=StatementListOut,
        HTTP_400=ProblemDetail,
        HTTP_404=ProblemDetail,
    ),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def statements(query: StatementsQuery) -> StatementListOut:
    """Your statements, newest first, a page at a time."""
    _enabled()
    after = None
    if query.after is not None:  # the lists' own checks: a moment with its offset, an id
        created, last_id = paging.cursor(query.after, (str, int))  # a column can hold
        after = (paging.cursor_moment(created), last_id)
    rows = service.page(db_session(), current_user, limit=query.limit, after=after)
    shown = rows[: query.limit]
    more = len(rows) > query.limit
    names = _account_ids()
    last = shown[-1] if shown else None
    return StatementListOut(
        statements=[statement_out(s, names) for s in shown],
        page=PageInfo(
            next_cursor=(
                api.encode_cursor([last.created_at.isoformat(), last.id]) if more and last else None
            ),
            limit=query.limit,
        ),
    )


@bp.get("/statements/<public_id>")
@spec.validate(
    resp=api.answers(
        HTTP_200=StatementOut,
        HTTP_400=ProblemDetail,
        HTTP_404=ProblemDetail,
    ),
    tags=TAGS,
    security=PORTAL_SECURITY,
)
def statement(public_id: str) -> StatementOut:
    """One statement: its state and progress, and its download link once ready."""
    _enabled()
    found = service.get_own(db_session(), public_id, current_user)
    return statement_out(api.or_404(found, _("Statement not found.")), _account_ids())
