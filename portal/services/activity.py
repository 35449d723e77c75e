"""The company's activity log: its audit events, newest first, filtered and paged, and the same
rows as CSV.

Reads `audit_events` (append-only) through the tenancy filter (and PostgreSQL's row-level
security): a company sees its own events only. A page costs the same few queries whatever the
history: a bounded count, one page of 25 with its user joined in, and one lookup each for the
invoice numbers and the users the page's events name. The export reads in chunks by id, so a long
history is streamed, never held in memory.

Details are a safe summary built from a fixed list of properties (numbers, amounts, field names,
the user acted on): nothing else an event carries is shown.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, tzinfo
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from portal.models import AuditEvent, Invoice, PortalUser
from portal.services.dates import DateError, day_bounds, parse_date
from portal.services.paging import MAX_PAGES, bounded_count, count_bound
from portal.services.statements.render_csv import neutralise

PER_PAGE = 25
EXPORT_CHUNK = 500

# The kinds of activity a person filters by, and the events of each.
GROUPS: dict[str, tuple[str, ...]] = {
    "security": (
        "Portal.Login",
        "Portal.SessionEnded",
        "Portal.PasswordChanged",
        "Portal.PasswordReset",
        "Portal.PasswordResetRequested",
        "Portal.MfaEnrolled",
        "Portal.MfaReset",
        "Portal.RecoveryCodeUsed",
        "Portal.RecoveryCodesIssued",
        "Portal.AccountLocked",
        "Portal.ApiTokenCreated",
        "Portal.ApiTokenRevoked",
        "Portal.SecurityAlert",
        "Portal.AccountSecured",
    ),
    "payments": (
        "Portal.PaymentMade",
        "Portal.PaymentFailed",
        "Portal.PaymentSubmitted",
        "Portal.PaymentScheduled",
        "Portal.PaymentCanceled",
        "Portal.PaymentMethodAdded",
        "Portal.PaymentMethodRemoved",
        "Portal.PaymentMethodDefault",
        "Portal.PaymentMethodReplaced",
        "Portal.AutopayEnabled",
        "Portal.AutopayChanged",
        "Portal.AutopayDisabled",
        "Portal.AutopaySkipped",
        "Portal.CreditApplied",
    ),
    "documents": (
        "Portal.StatementRequested",
        "Portal.StatementGenerated",
        "Portal.StatementDownloaded",
        "Portal.DocumentDownloaded",
        "Portal.InvoiceViewed",
        "Portal.InvoiceVoided",  # by the receivables system (/api/ar/)
    ),
    "people": (
        "Portal.ProfileUpdated",
        "Portal.EmailChangeRequested",
        "Portal.EmailChanged",
        "Portal.UserInvited",
        "Portal.InvitationAccepted",
        "Portal.InvitationResent",
        "Portal.UserRoleChanged",
        "Portal.UserAccessChanged",
        "Portal.UserDeactivated",
        "Portal.UserReactivated",
        "Portal.UserMfaReset",
        "Portal.UserSessionsEnded",
        "Portal.NotificationPreferencesUpdated",
        "Portal.Unsubscribed",
    ),
    "disputes": (
        "Portal.DisputeOpened",
        "Portal.DisputeMessagePosted",
        "Portal.DisputeResolved",
        "Portal.DisputeWithdrawn",
        "Portal.DisputeAttachmentDownloaded",
    ),
}
KNOWN_EVENTS = frozenset(name for names in GROUPS.values() for name in names)


@dataclass(frozen=True)
class ActivityQuery:
    user: str = ""  # a user's public id, or everyone
    kind: str = ""  # a key of GROUPS, or every kind
    date_from: date | None = None
    date_to: date | None = None
    page: int = 1
    zone: tzinfo = UTC  # the days of `date_from` and `date_to` are the viewer's


def read_query(
    args: Mapping[str, str], user_ids: Iterable[str]
) -> tuple[ActivityQuery, dict[str, DateError]]:
    """The filters from query parameters and what is wrong with the dates. A refused date is
    left out of the query; an unknown user or kind means all, a bad page the first."""
    errors: dict[str, DateError] = {}
    found: dict[str, date | None] = {}
    for name in ("from", "to"):
        parsed = parse_date(args.get(name, ""))
        if isinstance(parsed, DateError):
            errors[name] = parsed
            parsed = None
        found[name] = parsed
    user = args.get("user", "")
    kind = args.get("kind", "")
    try:
        page = min(max(1, int(args.get("page", "1"))), MAX_PAGES)
    except ValueError:
        page = 1
    return (
        ActivityQuery(
            user if user in set(user_ids) else "",
            kind if kind in GROUPS else "",
            found["from"],
            found["to"],
            page,
        ),
        errors,
    )


@dataclass(frozen=True)
class Row:
    event: AuditEvent
    user: PortalUser | None
    details: list[tuple[str, str]] = field(default_factory=list)  # (property kind, value)


@dataclass(frozen=True)
class ActivityPage:
    items: list[Row]
    total: int
    page: int
    per_page: int
    exact: bool = True

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def company_users(session: Session) -> list[PortalUser]:
    """The users of the signed-in company (tenancy), for the filter."""
    return list(session.scalars(select(PortalUser).order_by(PortalUser.name, PortalUser.id)))


def _filtered(session: Session, query: ActivityQuery) -> Select[Any]:
    statement = select(AuditEvent.id)
    if query.user:
        statement = statement.join(PortalUser, PortalUser.id == AuditEvent.user_id).where(
            PortalUser.public_id == query.user
        )
    if query.kind:
        statement = statement.where(AuditEvent.name.in_(GROUPS[query.kind]))
    start, end = day_bounds(query.date_from, query.date_to, query.zone)
    if start is not None:
        statement = statement.where(AuditEvent.created_at >= start)
    if end is not None:
        statement = statement.where(AuditEvent.created_at < end)
    return statement


def _rows_of(statement: Select[Any]) -> Select[AuditEvent, PortalUser]:
    return (
        select(AuditEvent, PortalUser)
        .outerjoin(PortalUser, PortalUser.id == AuditEvent.user_id)
        .where(AuditEvent.id.in_(statement.scalar_subquery()))
    )


def list_events(session: Session, query: ActivityQuery) -> ActivityPage:
    statement = _filtered(session, query)
    total, exact = bounded_count(session, statement, count_bound(query.page, PER_PAGE))
    pages = max(1, -(-total // PER_PAGE))
    # Within what was counted, like every list: however far a typed page number reaches, the
    # offset stays an ordinary number (an inexact count ends a few pages past the one asked).
    page = min(max(1, query.page), pages, MAX_PAGES)
    chosen = (
        statement.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
        .limit(PER_PAGE)
        .offset((page - 1) * PER_PAGE)
    )
    found = session.execute(
        _rows_of(chosen).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
    ).all()
    rows = _with_details(session, [(event, user) for event, user in found])
    return ActivityPage(rows, total, page, PER_PAGE, exact)


# --- details ------------------------------------------------------------------------------------

_PLAIN = (
    "reference",
    "role",
    "topic",
    "outcome",
    "format",
    "payment_method",
    "brand",
    "reason",
    "kind",  # a security alert's
)


def _invoice_ids(event: AuditEvent) -> list[str]:
    props = event.properties or {}
    ids = props.get("invoice_ids") or []
    one = props.get("invoice_id")
    listed = [str(i) for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
    return listed + ([one] if isinstance(one, str) else [])


def _with_details(
    session: Session, found: Sequence[tuple[AuditEvent, PortalUser | None]]
) -> list[Row]:
    """Rows with their safe details; the invoices and users they name are read in one query
    each (tenancy applies: another company's would not be found, and are shown as nothing)."""
    invoice_ids = {i for event, _user in found for i in _invoice_ids(event)}
    targets = {
        str(event.properties.get("target_user"))
        for event, _user in found
        if isinstance((event.properties or {}).get("target_user"), str)
    }
    numbers: dict[str, str] = {}
    if invoice_ids:
        numbers = {
            public_id: number
            for public_id, number in session.execute(
                select(Invoice.public_id, Invoice.number).where(Invoice.public_id.in_(invoice_ids))
            )
        }
    emails: dict[str, str] = {}
    if targets:
        emails = {
            public_id: email
            for public_id, email in session.execute(
                select(PortalUser.public_id, PortalUser.email).where(
                    PortalUser.public_id.in_(targets)
                )
            )
        }
    return [Row(event, user, details(event, numbers, emails)) for event, user in found]


def details(
    event: AuditEvent, numbers: Mapping[str, str], emails: Mapping[str, str]
) -> list[tuple[str, str]]:
    """What the row says about the event: (kind, value) pairs from known properties only."""
    props: dict[str, Any] = event.properties or {}
    out: list[tuple[str, str]] = []
    invoices = [numbers[i] for i in _invoice_ids(event) if i in numbers]
    if invoices:
        out.append(("invoices", ", ".join(invoices)))
    amount, currency = props.get("amount"), props.get("currency")
    if isinstance(amount, int) and isinstance(currency, str) and len(currency) == 3:
        out.append(("amount", f"{amount}:{currency}"))
    for key in ("changed_fields", "changed"):
        names = props.get(key)
        if isinstance(names, list) and names:
            out.append(("fields", ", ".join(str(n) for n in names)))
    target = props.get("target_user")
    if isinstance(target, str) and target in emails:
        out.append(("user", emails[target]))
    dispute = props.get("dispute")
    if isinstance(dispute, str):
        out.append(("dispute", dispute))
    for key in _PLAIN:
        value = props.get(key)
        if isinstance(value, str) and value and len(value) <= 100:
            out.append((key, value))
    for key in ("attachments", "ended", "payments_moved"):
        value = props.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            out.append((key, str(value)))
    return out


def who(row: Row) -> str | None:
    """The user's e-mail, or None for the system; "operator" when an operator acted."""
    if row.user is not None:
        return row.user.email
    if (row.event.properties or {}).get("by") == "operator":
        return "operator"
    return None


# --- CSV ----------------------------------------------------------------------------------------


def export_rows(
    sessions: Callable[[], AbstractContextManager[Session]], query: ActivityQuery
) -> Iterator[list[Row]]:
    """Every matching event in chunks of EXPORT_CHUNK, newest first (by id, which follows
    time), each chunk one query plus its lookups, read in a session of its own from `sessions`
    (bound to the reader's scope) and closed before the chunk is handed on: the history is
    never read whole, and no transaction stays open while the download streams."""
    before: int | None = None
    while True:
        with sessions() as session:
            chunk = _filtered(session, query).order_by(AuditEvent.id.desc()).limit(EXPORT_CHUNK)
            if before is not None:
                chunk = chunk.where(AuditEvent.id < before)
            found = session.execute(_rows_of(chunk).order_by(AuditEvent.id.desc())).all()
            rows = _with_details(session, [(event, user) for event, user in found])
        if not rows:
            return
        yield rows
        if len(rows) < EXPORT_CHUNK:
            return
        before = rows[-1].event.id


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[str]]) -> Iterator[str]:
    """RFC 4180 text (CRLF), a UTF-8 byte order mark first, text that a spreadsheet would
    evaluate neutralised (render_csv.neutralise)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        value = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return value

    writer.writerow([neutralise(h) for h in header])
    yield "\ufeff" + flush()
    for row in rows:
        writer.writerow([neutralise(str(cell)) for cell in row])
        yield flush()
