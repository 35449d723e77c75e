"""Dates typed into filters: ISO 8601 (what a date input sends), within sane bounds.

Every date a filter takes lies between EARLIEST and LATEST, so date arithmetic on it (the day
after "to", the start of "from") never leaves Python's calendar (year 1 to 9999) and a database
never sees year 1 or 9999.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, time, timedelta, tzinfo

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


def day_bounds(
    first: date | None, last: date | None, zone: tzinfo
) -> tuple[datetime | None, datetime | None]:
    """The moments (UTC) a filter's days span where the reader is: from the start of `first` to
    the start of the day after `last` (exclusive), midnight in `zone` (the profile's time zone,
    as the page shows its times). Either end None when not given."""

    def start(day: date) -> datetime:
        return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)

    return (
        start(first) if first is not None else None,
        start(last + timedelta(days=1)) if last is not None else None,
    )
