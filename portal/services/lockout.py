"""The sign-in lockout: one rule, in one place, for every e-mail address.

Failures (a wrong password, a wrong second-factor code) count within a window of
LOCKOUT_MINUTES that starts at the first failure; reaching LOCKOUT_THRESHOLD locks the address
for LOCKOUT_MINUTES; a window or a lock that has run out starts afresh. A passed second factor
and a new password clear the count. Addresses with and without an account share the rule and
the store (`login_throttles`), so the lockout cannot tell which addresses exist.

Rows are keyed by a keyed hash of the normalized address (the table names nobody). A failure is
counted by one atomic upsert (INSERT … ON CONFLICT DO UPDATE … RETURNING), so concurrent
failures each count, on SQLite and PostgreSQL alike. Time is the portal's clock, passed in.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from portal.models import LoginThrottle
from portal.services.crypto import Keyring

_PURPOSE = b"portal.login-throttle.v1"
_TABLE = LoginThrottle.__table__
_COLUMNS = _TABLE.c


@dataclass(frozen=True)
class Rule:
    threshold: int
    period: timedelta  # both the counting window and the lock's length


@dataclass(frozen=True)
class Failure:
    """What one more failure left behind."""

    failures: int
    locked_until: datetime | None
    just_locked: bool  # this failure was the one that locked the address


def normalize_email(email: str) -> str:
    """The one form of an address that sign-in, lockouts, invitations and the profile look
    users up by: NFKC (a full-width at sign or letter is the ASCII one), the local part lower-cased,
    the domain case-folded (domains are case-insensitive whatever their script)."""
    text = unicodedata.normalize("NFKC", email.strip())
    local, at, domain = text.rpartition("@")
    return f"{local.lower()}@{domain.casefold()}" if at else text.lower()


def key_for(keys: Keyring, email: str) -> str:
    """The row's key: a keyed hash of the normalized address. (Under a new SECRET_KEY the
    counts start afresh; that is all a rotation costs here.)"""
    return keys.mac(_PURPOSE, normalize_email(email).encode())


def locked_until(session: Session, key: str, *, now: datetime) -> datetime | None:
    """When the address's lock ends, or None if it is not locked now."""
    until = session.scalar(select(_COLUMNS.locked_until).where(_COLUMNS.key_hash == key))
    return until if until is not None and until > now else None


def _run_out(now: datetime, rule: Rule) -> ColumnElement[bool]:
    """The stored window, or lock, is over: the next failure starts a new count."""
    return or_(
        and_(_COLUMNS.locked_until.is_not(None), _COLUMNS.locked_until <= now),
        and_(_COLUMNS.locked_until.is_(None), _COLUMNS.window_started_at <= now - rule.period),
    )


def _when(value: datetime) -> Any:
    return literal(value, type_=_COLUMNS.locked_until.type)


def record_failure(session: Session, key: str, *, rule: Rule, now: datetime) -> Failure:
    """Count one failure for the address, atomically; says whether it is locked now."""
    lock_end = now + rule.period
    run_out = _run_out(now, rule)
    failures = case((run_out, 1), else_=_COLUMNS.failures + 1)
    still_locked = and_(_COLUMNS.locked_until.is_not(None), _COLUMNS.locked_until > now)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(LoginThrottle)
        .values(
            key_hash=key,
            failures=1,
            window_started_at=now,
            locked_until=lock_end if rule.threshold <= 1 else None,
        )
        .on_conflict_do_update(
            index_elements=[_COLUMNS.key_hash],
            # Every expression reads the row as it was before this failure.
            set_={
                "failures": failures,
                "window_started_at": case((run_out, _when(now)), else_=_COLUMNS.window_started_at),
                "locked_until": case(
                    (still_locked, _COLUMNS.locked_until),  # a lock is never extended
                    (failures >= rule.threshold, _when(lock_end)),
                    else_=None,
                ),
            },
        )
        .returning(_COLUMNS.failures, _COLUMNS.locked_until)
    )
    count, until = session.execute(statement).one()
    locked = until if until is not None and until > now else None
    return Failure(count, locked, just_locked=locked is not None and count == rule.threshold)


def clear(session: Session, key: str) -> None:
    """The address proved itself (both factors passed, or a new password was set)."""
    session.execute(delete(LoginThrottle).where(_COLUMNS.key_hash == key))


def forget_run_out(session: Session, *, rule: Rule, now: datetime) -> int:
    """Drop the rows whose window or lock is over (they would start afresh anyway)."""
    result = session.execute(delete(LoginThrottle).where(_run_out(now, rule)))
    return int(getattr(result, "rowcount", 0) or 0)
