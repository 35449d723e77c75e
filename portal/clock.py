"""The portal's idea of "now". Tests move it; nothing else reads the system clock directly."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from flask import current_app, has_app_context


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def today(self) -> date:
        return self.now().date()

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


_default = Clock()


def clock() -> Clock:
    if has_app_context():
        found: Clock = current_app.extensions.setdefault("portal.clock", Clock())
        return found
    return _default


def now() -> datetime:
    return clock().now()


def today() -> date:
    return clock().today()
