"""The monthly statement: last month's statement, asked for on a user's behalf, told once.

The hourly job `workers.jobs.send_monthly_statements` asks `ask` for every active user (in a
session bound to the user's scope) on the first MONTHLY_DAYS days of a month in the user's time
zone (a job that did not run on the 1st still asks). A user whose MONTHLY_STATEMENT preference
is on (e-mail or portal) gets last month's statement of every account in their scope, asked for
through the statements service as any statement is (`request_statement`, with `period`
"YYYY-MM": once per user and month, a UNIQUE index behind it). When it is ready, the user is
notified MONTHLY_STATEMENT with key `monthly:<YYYY-MM>` (statements/delivery.py `announce`),
linking to the statements page: once per user and month, however often the job runs.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy.orm import Session

from portal.models import NotificationTopic, PortalUser, StatementFormat, StatementState
from portal.notifications.reminders import local_today
from portal.runtime import Runtime
from portal.services import audit, notifications
from portal.statements import service

MONTHLY_DAYS = 3  # the days of a month on which last month's statement is asked for
FORMAT = StatementFormat.PDF
ATTEMPTS = 3  # a monthly statement that failed is asked for again, up to this many runs


def last_month(today: date) -> tuple[str, date, date]:
    """("YYYY-MM", first day, last day) of the month before `today`'s."""
    end = today.replace(day=1) - timedelta(days=1)
    return end.strftime("%Y-%m"), end.replace(day=1), end


def maybe_due(now: datetime) -> bool:
    """Whether it is the first days of a month anywhere on earth (a user's zone is at most a
    day from UTC): the job does nothing else on the other days."""
    return any((now + timedelta(days=shift)).day <= MONTHLY_DAYS for shift in (-1, 0, 1))


def ask(runtime: Runtime, session: Session, user_id: int, now: datetime) -> str:
    """Ask for the user's monthly statement if it is time and they want it (`session` bound
    to their scope); what happened. Never commits."""
    user = session.get(PortalUser, user_id)
    if user is None or not user.is_active:
        return "no user"
    today = local_today(user, now)
    if today.day > MONTHLY_DAYS:
        return "not yet"
    wanted = notifications.channels(session, user, NotificationTopic.MONTHLY_STATEMENT)
    if not (wanted["email"] or wanted["portal"]):
        return "not wanted"
    period, start, end = last_month(today)
    existing = service.monthly(session, user, period)
    if existing is not None:
        if existing.state is StatementState.FAILED and existing.attempts < ATTEMPTS:
            service.retry(runtime, session, existing, now)
            return "asked again"
        return "asked before"
    accounts = [account.id for account in service.accounts(session)]
    if not accounts:
        return "no accounts"
    service.request_statement(
        runtime,
        session,
        user,
        start=start,
        end=end,
        account_ids=accounts,
        fmt=FORMAT,
        locale=str(user.locale or user.company.locale or "en_US"),
        now=now,
        request=audit.RequestInfo(),
        period=period,
    )
    return "asked"
