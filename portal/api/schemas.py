"""Models the API's endpoints share. Money is integer minor units with its ISO currency (as the
database keeps it) and the same amount written out for the user's locale."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Money(BaseModel):
    amount_minor: int = Field(description="Integer minor units (cents) of `currency`.")
    currency: str = Field(min_length=3, max_length=3, description="ISO 4217 code.")
    formatted: str = Field(description="The amount written for the user's locale.")


class PageInfo(BaseModel):
    """Cursor pagination: pass `next_cursor` as `after` for the next page."""

    next_cursor: str | None = Field(
        description="Opaque; null on the last page. Send it back as `after`."
    )
    limit: int


class Empty(BaseModel):
    """No body."""
