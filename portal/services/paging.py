"""Counting a list without reading all of it.

A list narrowed by a search, dates or a status the database keeps no tally for is counted up to
a bound: a few pages past the one asked for, and at least COUNT_BOUND rows. Past it the page says
"more than" and offers the next page, never a made-up last one. The cost of a count is then
bounded whatever the customer's history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

# 40 pages of 25: enough to page through; past it, people narrow the list.
COUNT_BOUND = 1_000
AHEAD = 3  # pages counted past the one asked for
# However far a page number reaches (a typed URL: ?page=999…9), the count stops here.
MAX_PAGES = 4_000
PAGE_SIZE = 25

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its rows, and how many there are in all."""

    items: list[T]
    total: int  # exact, or with `exact` False a lower bound: there are more
    page: int
    page_size: int = PAGE_SIZE
    exact: bool = True

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def count_bound(page: int, page_size: int) -> int:
    """How many rows to count for `page`: a few pages past it, within COUNT_BOUND..MAX_PAGES."""
    return max(COUNT_BOUND, (min(page, MAX_PAGES) + AHEAD) * page_size)


def bounded_count(session: Session, statement: Select[Any], bound: int) -> tuple[int, bool]:
    """How many rows `statement` gives, reading at most `bound` + 1: (count, exact)."""
    counted = session.scalar(
        select(func.count()).select_from(statement.limit(bound + 1).subquery())
    )
    found = int(counted or 0)
    return (bound, False) if found > bound else (found, True)


def after_key(
    columns: Sequence[Any], values: Sequence[Any], *, descending: bool
) -> ColumnElement[bool]:
    """Keyset pagination: the rows that come after the one whose sort key (`columns`, the last
    one unique) is `values`, in that order (all descending, or all ascending). Each value is
    bound with its column's type."""
    alternatives = []
    for i, column in enumerate(columns):
        equal = [columns[j] == values[j] for j in range(i)]
        beyond = column < values[i] if descending else column > values[i]
        alternatives.append(and_(*equal, beyond))
    return or_(*alternatives)
