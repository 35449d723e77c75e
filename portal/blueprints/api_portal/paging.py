"""What the portal API's lists share: `limit` and `after` (keyset cursors), date filters with
the pages' bounds and messages, and each answer's `page`.

A cursor is opaque to clients: the last row's sort key, `api.encode_cursor`'d. Whatever comes
back is checked before a query sees it (its shape, its types, no NUL, integers a database
column can hold, dates and times that parse): a made-up or tampered cursor is a 400 problem.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from flask_babel import gettext as _
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.orm import Session

from portal import api
from portal.api.schemas import PageInfo
from portal.blueprints.payments.history import date_message
from portal.services import dates, documents

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
BIGINT = 2**63  # what a BIGINT column holds (a larger number would be a database error)
INTEGER = 2**31  # what an INTEGER column holds: every table's id
DATE_HELP = (
    f"ISO 8601 date (YYYY-MM-DD), {dates.EARLIEST.isoformat()} to {dates.LATEST.isoformat()}."
)


class ListQuery(BaseModel):
    """`limit` and `after`, and an empty parameter (`?status=`) taken as not given, as the
    pages' forms do."""

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Rows per page.")
    after: str | None = Field(
        None,
        max_length=1000,
        description="The previous page's `page.next_cursor`; leave out for the first page.",
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != ""}
        return data


def invalid_cursor() -> api.Problem:
    return api.Problem(400, _("That page cursor is not valid."), errors=[("after", "invalid")])


def cursor(after: str, shape: tuple[type, ...]) -> list[Any]:
    """The values `after` carries, of the types in `shape`, fit for a query; a 400 otherwise.
    The last is the row's id, which an INTEGER column holds (PostgreSQL refuses a larger one
    outright: a 500 once)."""
    values = api.decode_cursor(after, shape)
    for place, value in enumerate(values, start=1):
        bound = INTEGER if place == len(values) else BIGINT
        if isinstance(value, str) and "\x00" in value:
            raise invalid_cursor()
        if isinstance(value, int) and not -bound <= value < bound:
            raise invalid_cursor()
    return values


def cursor_date(raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise invalid_cursor() from None


def cursor_moment(raw: str) -> datetime:
    """A moment with its offset, as `moment_key` wrote it (UTC)."""
    try:
        value = datetime.fromisoformat(raw)
        if value.tzinfo is None:
            raise ValueError(raw)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise invalid_cursor() from None


def date_range(raw_from: str | None, raw_to: str | None) -> tuple[date | None, date | None]:
    """The filters' dates (`from`, `to`) parsed as the pages parse them; every problem found is
    one 400 naming its parameter, with the pages' words."""
    errors: list[tuple[str, str]] = []
    found: dict[str, date | None] = {}
    for name, raw in (("from", raw_from), ("to", raw_to)):
        parsed = dates.parse_date(raw or "")
        if isinstance(parsed, dates.DateError):
            errors.append((name, date_message(parsed)))
            parsed = None
        found[name] = parsed
    start, end = found["from"], found["to"]
    if start and end and end < start:
        errors.append(("to", _("The end date must be on or after the start date.")))
    if errors:
        raise api.Problem(400, _("Check your input."), errors=errors)
    return start, end


def check_account(session: Session, account: str | None) -> None:
    """An `account` filter names a billing account in the user's scope (the documents page's
    choices); any other (another company's, one not granted, none at all) is a 400."""
    if account and account not in dict(documents.accounts_in_scope(session)):
        raise api.Problem(
            400,
            _("Check your input."),
            errors=[("account", _("Choose one of your billing accounts."))],
        )


def page_info(next_key: list[Any] | None, limit: int) -> PageInfo:
    return PageInfo(
        next_cursor=api.encode_cursor(next_key) if next_key is not None else None, limit=limit
    )
