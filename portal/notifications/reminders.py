"""Reminders: an invoice due soon, one that became overdue, one just issued, told once.

The hourly job `workers.jobs.send_reminders` lists the active users of every company
(`recipients`, across companies on purpose), then for each user, in a session bound to that
user's scope (a restricted user sees only the invoices of their granted accounts, an admin all
of the company's), asks `remind`. One notification per invoice (its centre row links to the
invoice, and the key names the invoice), through `portal.notifications.notify`, so each is told
once per (user, topic, key) however often, or however concurrently, the job runs:

- PAYMENT_DUE: open or partially paid, a balance left, due within the user's N days
  (`remind_days`) after their "today" (in their time zone; told on the first run in that
  window, so a day the job did not run is caught up): `due:<invoice>:<due date>`;
- PAYMENT_OVERDUE: the same, on the first day past due (or within OVERDUE_CATCH_UP days of it,
  should the job not have run that day): `overdue:<invoice>:<due date>`, once, not daily;
- INVOICE_ISSUED: created since the job last finished (`NotificationRun` "invoices_issued",
  moved on only once every user was handled, and read back ISSUED_OVERLAP earlier, so an
  invoice committed late is not missed): `issued:<invoice>`.

Disputed, paid, void (and processing or failed) invoices are never reminded. Each query is an
indexed range of one company (or of the user's accounts): the invoices due within a few
days either side of today, or created within the last hour or so, never a customer's history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from portal import i18n, tenancy
from portal.models import (
    Invoice,
    InvoiceStatus,
    Notification,
    NotificationRun,
    NotificationTopic,
    PortalUser,
    UserStatus,
)
from portal.models.invoice import OVERDUE_ELIGIBLE
from portal.notifications import notify
from portal.runtime import Runtime
from portal.services import notifications

ISSUED_RUN = "invoices_issued"
ISSUED_OVERLAP = timedelta(minutes=15)  # read back this far: an invoice committed late counts
ISSUED_FIRST_LOOKBACK = timedelta(days=1)  # the first run ever announces the last day's only
# However long the mark stood still (a user whose reminders keep failing holds it), a run reads
# no further back than this.
ISSUED_AT_MOST = timedelta(days=7)
OVERDUE_CATCH_UP = 3  # days past due in which "became overdue" is still told (once)
NEVER_TOLD = (InvoiceStatus.PAID, InvoiceStatus.VOID, InvoiceStatus.DISPUTED)
DUE, OVERDUE = NotificationTopic.PAYMENT_DUE, NotificationTopic.PAYMENT_OVERDUE
ISSUED = NotificationTopic.INVOICE_ISSUED


@dataclass(frozen=True)
class Recipient:
    """Who the job reminds, and the scope their reminders are looked up in."""

    user_id: int
    scope: tenancy.Scope


def recipients(session: Session) -> list[Recipient]:
    """Every active user of every company, with their scope (one query, and one for grants)."""
    with tenancy.system(session):  # the job discovers its work across companies
        users = session.scalars(
            select(PortalUser)
            .where(PortalUser.status == UserStatus.ACTIVE)
            .options(selectinload(PortalUser.grants))
            .order_by(PortalUser.id)
        )
        return [Recipient(user.id, tenancy.scope_for_user(user)) for user in users]


def local_today(user: PortalUser, now: datetime) -> date:
    """The user's "today", in their time zone (UTC without one)."""
    return now.astimezone(i18n.zone(user.timezone)).date()


def issued_since(session: Session, now: datetime) -> datetime:
    """From when invoices count as new for this run."""
    done = session.scalar(
        select(NotificationRun.done_until).where(NotificationRun.name == ISSUED_RUN)
    )
    since = (done if done is not None else now - ISSUED_FIRST_LOOKBACK) - ISSUED_OVERLAP
    return max(since, now - ISSUED_AT_MOST)


def issued_done(session: Session, until: datetime) -> None:
    """Every user was told of the invoices created up to `until`: move the mark on (never back,
    whichever of two concurrent runs finishes first)."""
    values: dict[str, Any] = {"name": ISSUED_RUN, "done_until": until}
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(NotificationRun).values(values).on_conflict_do_nothing())
    session.execute(
        update(NotificationRun)
        .where(NotificationRun.name == ISSUED_RUN, NotificationRun.done_until < until)
        .values(done_until=until)
        .execution_options(synchronize_session=False)
    )


def _untold(
    session: Session, user: PortalUser, events: list[tuple[NotificationTopic, str, Invoice, int]]
) -> list[tuple[NotificationTopic, str, Invoice, int]]:
    """The events not told yet (one query on the UNIQUE index, however many were told before:
    an hourly run re-reads the day's invoices; `notify` stays what makes each once)."""
    if not events:
        return []
    rows = session.execute(
        select(Notification.topic, Notification.key).where(
            Notification.user_id == user.id,
            Notification.topic.in_({topic for topic, _k, _i, _a in events}),
            Notification.key.in_([key for _t, key, _i, _a in events]),
        )
    )
    told = {(topic, key) for topic, key in rows}
    return [event for event in events if (event[0], event[1]) not in told]


def _params(invoice: Invoice, amount: int) -> dict[str, str | int]:
    return {
        "invoice": invoice.number,
        "amount": amount,
        "currency": invoice.currency,
        "due_date": invoice.due_date.isoformat(),
    }


def remind(
    runtime: Runtime, session: Session, user_id: int, *, now: datetime, since: datetime
) -> int:
    """Tell one user (`session` bound to their scope) of their invoices due in N days, just
    overdue and new since `since`; how many notifications are new. Never commits."""
    user = session.get(PortalUser, user_id)
    if user is None or not user.is_active:
        return 0
    today = local_today(user, now)
    due_on = today + timedelta(days=notifications.remind_days(session, user))
    # One indexed range: due within the user's N days (a day the job missed is caught up),
    # or overdue within OVERDUE_CATCH_UP days; not due today (neither).
    reminded = session.scalars(
        select(Invoice)
        .where(
            Invoice.status.in_(OVERDUE_ELIGIBLE),
            Invoice.due_date.between(today - timedelta(days=OVERDUE_CATCH_UP), due_on),
            Invoice.due_date != today,
            Invoice.balance_due > 0,
        )
        .order_by(Invoice.due_date, Invoice.id)
    ).all()
    issued = session.scalars(
        select(Invoice)
        .where(
            Invoice.created_at > since,
            Invoice.created_at <= now,
            Invoice.status.not_in(NEVER_TOLD),
        )
        .order_by(Invoice.created_at, Invoice.id)
    ).all()
    events: list[tuple[NotificationTopic, str, Invoice, int]] = []
    for invoice in reminded:
        due = invoice.due_date.isoformat()
        if invoice.due_date > today:
            events.append((DUE, f"due:{invoice.public_id}:{due}", invoice, invoice.balance_due))
        else:
            events.append(
                (OVERDUE, f"overdue:{invoice.public_id}:{due}", invoice, invoice.balance_due)
            )
    for invoice in issued:
        events.append((ISSUED, f"issued:{invoice.public_id}", invoice, invoice.total))
    told = 0
    for topic, key, invoice, amount in _untold(session, user, events):
        told += (
            notify(
                runtime,
                session,
                user,
                topic,
                key=key,
                params=_params(invoice, amount),
                link=f"/portal/invoices/{invoice.public_id}",
            )
            is not None
        )
    return told
