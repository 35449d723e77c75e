"""Asking for a statement, following it, retrying it, and opening its file.

A statement is the requesting user's: they list it, only links signed for them open it. The
request writes the row and hands the job to the outbox in the same transaction, so the job runs
only once the row is committed (portal/runtime.py `hand_off`). The job is `generate` (this
package); the page polls the row (`state`, `progress`).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import (
    IN_PROGRESS,
    BillingAccount,
    Company,
    PortalUser,
    Statement,
    StatementFormat,
    StatementState,
)
from portal.runtime import GENERATE_STATEMENT, Runtime
from portal.services import audit, outbox
from portal.services.downloads import Downloadable

MAX_DAYS = 366  # the longest range one statement covers (STATEMENT_MAX_DAYS)
RETENTION = timedelta(days=7)  # how long a statement's file is kept (STATEMENT_RETENTION_DAYS)
RECENT = 10  # statements listed on the page
CONTENT_TYPES = {
    StatementFormat.PDF: "application/pdf",
    StatementFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    StatementFormat.CSV: "text/csv; charset=utf-8",
}


class RangeProblem(StrEnum):
    ORDER = "order"  # start after end
    FUTURE = "future"  # end after today
    TOO_LONG = "too_long"  # more than the maximum range


def range_problem(start: date, end: date, today: date, max_days: int) -> RangeProblem | None:
    if start > end:
        return RangeProblem.ORDER
    if end > today:
        return RangeProblem.FUTURE
    if (end - start).days + 1 > max_days:
        return RangeProblem.TOO_LONG
    return None


def subject(statement_id: int) -> str:
    """What the statement's outbox work is about (its page says when that work is late)."""
    return f"statement:{statement_id}"


def accounts(session: Session) -> list[BillingAccount]:
    """The billing accounts the session's user may include (their scope), by name."""
    return list(session.scalars(select(BillingAccount).order_by(BillingAccount.name)))


def request_statement(
    runtime: Runtime,
    session: Session,
    user: PortalUser,
    *,
    start: date,
    end: date,
    account_ids: list[int],
    fmt: StatementFormat,
    locale: str,
    now: datetime,
    request: audit.RequestInfo,
    period: str | None = None,
) -> Statement:
    """The statement row, and its job handed to the outbox in the same transaction. The
    caller has checked the range (`range_problem`) and that the accounts are the user's.

    The same request while an identical one is still queued or generating (a double click, a
    resent form) answers that statement: one file, one mail, one job. A monthly statement
    (`period`, "YYYY-MM", asked for by the portal itself) is asked for once per user and month:
    the existing one is the answer, whatever its state (a UNIQUE index backs this against a
    concurrent request: the loser's transaction fails and asks nothing)."""
    if period is not None:
        existing = monthly(session, user, period)
        if existing is not None:
            return existing
    wanted = sorted(set(account_ids))
    for pending in session.scalars(
        select(Statement).where(
            Statement.requested_by_user_id == user.id,
            Statement.state.in_(IN_PROGRESS),
            Statement.start_date == start,
            Statement.end_date == end,
            Statement.format == fmt,
        )
    ):
        if pending.account_ids == wanted and pending.period == period:
            return pending
    statement = Statement(
        company_id=user.company_id,
        requested_by_user_id=user.id,
        account_ids=wanted,
        start_date=start,
        end_date=end,
        format=fmt,
        locale=locale,
        period=period,
        state=StatementState.QUEUED,
        progress=0,
        attempts=0,
        created_at=now,
    )
    session.add(statement)
    session.flush()
    _hand_off(runtime, session, statement)
    audit.record_for(
        session,
        user,
        "Portal.StatementRequested",
        request=request,
        statement_id=statement.public_id,
        start_date=start.isoformat(),
        end_date=end.isoformat(),
        format=fmt.value,
    )
    return statement


def monthly(session: Session, user: PortalUser, period: str) -> Statement | None:
    """The monthly statement the portal asked for `user` for `period` ("YYYY-MM"), if any."""
    return session.scalars(
        select(Statement).where(
            Statement.requested_by_user_id == user.id, Statement.period == period
        )
    ).one_or_none()


def _hand_off(runtime: Runtime, session: Session, statement: Statement) -> None:
    runtime.hand_off(session, GENERATE_STATEMENT, statement.id, subject=subject(statement.id))


def recent(session: Session, user: PortalUser, limit: int = RECENT) -> list[Statement]:
    return list(
        session.scalars(
            select(Statement)
            .where(Statement.requested_by_user_id == user.id)
            .order_by(Statement.created_at.desc(), Statement.id.desc())
            .limit(limit)
        )
    )


def page(
    session: Session,
    user: PortalUser,
    *,
    limit: int,
    after: tuple[datetime, int] | None = None,
) -> list[Statement]:
    """One page of the user's statements, newest first (keyset: after the (created_at, id)
    of the last one seen); `limit + 1` rows, so the caller knows whether more follow."""
    query = select(Statement).where(Statement.requested_by_user_id == user.id)
    if after is not None:
        created, last_id = after
        query = query.where(
            (Statement.created_at < created)
            | ((Statement.created_at == created) & (Statement.id < last_id))
        )
    query = query.order_by(Statement.created_at.desc(), Statement.id.desc()).limit(limit + 1)
    return list(session.scalars(query))


def get_own(session: Session, public_id: str, user: PortalUser) -> Statement | None:
    """The user's statement (anyone else's, like a missing one, is None)."""
    return session.scalars(
        select(Statement).where(
            Statement.public_id == public_id, Statement.requested_by_user_id == user.id
        )
    ).one_or_none()


def retry(runtime: Runtime, session: Session, statement: Statement, now: datetime) -> bool:
    """A failed statement asked for again (same range, accounts and format). False when it is
    not failed (a double click, or it is already on its way)."""
    if statement.state is not StatementState.FAILED:
        return False
    statement.state = StatementState.QUEUED
    statement.attempts += 1  # an earlier attempt's late writes no longer match this one
    statement.progress = 0
    statement.error_code = None
    statement.created_at = now
    statement.started_at = None
    session.flush()
    _hand_off(runtime, session, statement)
    return True


def any_late(session: Session, statements: list[Statement], now: datetime) -> bool:
    """Whether the work of any of these statements on their way waits past its time (one
    query, however many)."""
    busy = [subject(s.id) for s in statements if s.state in IN_PROGRESS]
    return outbox.is_late(session, busy, now)


def still_theirs(session: Session, statement: Statement) -> bool:
    """Whether every account the statement covers is still in the session's scope (a user who
    lost an account since cannot open a statement of it)."""
    wanted = {int(i) for i in statement.account_ids}
    seen = set(session.scalars(select(BillingAccount.id).where(BillingAccount.id.in_(wanted))))
    return bool(wanted) and seen == wanted


def for_download(
    session: Session, public_id: str, user: PortalUser, now: datetime
) -> Downloadable | None:
    """The user's ready statement's file (None once it expired, or for anyone else)."""
    statement = get_own(session, public_id, user)
    if (
        statement is None
        or statement.state is not StatementState.READY
        or statement.storage_key is None
        or (statement.available_until is not None and statement.available_until <= now)
        or not still_theirs(session, statement)
    ):
        return None
    company = session.get(Company, statement.company_id)
    return Downloadable(
        statement.storage_key,
        statement.filename or "statement",
        CONTENT_TYPES[statement.format],
        "Portal.StatementDownloaded",
        {
            "customer_id": company.public_id if company else None,
            "statement_id": statement.public_id,
            "start_date": statement.start_date.isoformat(),
            "end_date": statement.end_date.isoformat(),
            "format": statement.format.value,
        },
    )
