"""Dates typed into filters: ISO 8601 (what a date input sends), within sane bounds.

Every date a filter takes lies between EARLIEST and LATEST, so date arithmetic on it (the day
after "to", the start of "from") never leaves Python's calendar (year 1 to 9999) and a database
never sees year 1 or 9999.
"""

from __future__ import annotations

import enum
from datetime import date

EARLIEST = date(2000, 1, 1)
LATEST = date(2099, 12, 31)


class DateError(enum.StrEnum):
    INVALID = "date_invalid"
    OUT_OF_RANGE = "date_out_of_range"


def parse_date(raw: str) -> date | DateError | None:
    """None when left empty; else the date, or what is wrong with it."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = date.fromisoformat(raw)
    except ValueError:
        return DateError.INVALID
    if not EARLIEST <= value <= LATEST:
        return DateError.OUT_OF_RANGE
    return value
