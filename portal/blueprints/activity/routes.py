"""The company's activity log (`activity.index`) and its CSV export: customer.admin only.

Like Payment History: one GET form, one URL, two renderings (htmx asks for the results only).
Anyone else gets the very 404 a missing page gets."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, abort, request, stream_with_context
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from sqlalchemy.orm import Session

from portal import clock, i18n, tenancy
from portal.blueprints.disputes.forms import reason_choices
from portal.blueprints.payments.history import date_message
from portal.extensions import Database, db_session, limiter
from portal.notifications import messages
from portal.services import activity, auth, dates
from portal.services.activity import ActivityQuery, Row
from portal.templating import format_datetime, money
from portal.web import render

bp = Blueprint("activity", __name__, url_prefix="/portal")
# A download reads the whole filtered history: a few a minute is plenty for a person.
EXPORT_LIMIT = "10 per minute;60 per hour"
F = TypeVar("F", bound=Callable[..., Any])

GROUP_LABELS = {
    "security": _l("Sign-in & security"),
    "payments": _l("Payments"),
    "documents": _l("Documents & statements"),
    "people": _l("Profile & users"),
    "disputes": _l("Disputes"),
}

# What a person reads for each event name (shared-names.md); an unknown name shows as it is.
EVENT_LABELS = {
    "Portal.Login": _l("Signed in"),
    "Portal.SessionEnded": _l("Session ended"),
    "Portal.PasswordChanged": _l("Password changed"),
    "Portal.PasswordReset": _l("Password reset"),
    "Portal.PasswordResetRequested": _l("Password reset requested"),
    "Portal.MfaEnrolled": _l("Two-step verification turned on"),
    "Portal.MfaReset": _l("Two-step verification reset"),
    "Portal.RecoveryCodeUsed": _l("Recovery code used"),
    "Portal.RecoveryCodesIssued": _l("New recovery codes issued"),
    "Portal.AccountLocked": _l("Account locked"),
    "Portal.ApiTokenCreated": _l("API token created"),
    "Portal.ApiTokenRevoked": _l("API token revoked"),
    "Portal.SecurityAlert": _l("Security alert sent"),
    "Portal.AccountSecured": _l("Account secured (“This wasn't me”)"),
    "Portal.PaymentMade": _l("Payment made"),
    "Portal.PaymentFailed": _l("Payment failed"),
    "Portal.PaymentSubmitted": _l("Payment submitted"),
    "Portal.PaymentScheduled": _l("Payment scheduled"),
    "Portal.PaymentCanceled": _l("Payment canceled"),
    "Portal.PaymentMethodAdded": _l("Payment method added"),
    "Portal.PaymentMethodRemoved": _l("Payment method removed"),
    "Portal.PaymentMethodDefault": _l("Default payment method changed"),
    "Portal.PaymentMethodReplaced": _l("Payment method replaced"),
    "Portal.AutopayEnabled": _l("Automatic payments turned on"),
    "Portal.AutopayChanged": _l("Automatic payments changed"),
    "Portal.AutopayDisabled": _l("Automatic payments turned off"),
    "Portal.AutopaySkipped": _l("Invoice skipped from automatic payment"),
    "Portal.CreditApplied": _l("Credit applied"),
    "Portal.StatementRequested": _l("Statement requested"),
    "Portal.StatementGenerated": _l("Statement generated"),
    "Portal.StatementDownloaded": _l("Statement downloaded"),
    "Portal.DocumentDownloaded": _l("Document downloaded"),
    "Portal.InvoiceViewed": _l("Invoice viewed"),
    "Portal.ProfileUpdated": _l("Profile updated"),
    "Portal.EmailChangeRequested": _l("Email change requested"),
    "Portal.EmailChanged": _l("Email changed"),
    "Portal.UserInvited": _l("User invited"),
    "Portal.InvitationAccepted": _l("Invitation accepted"),
    "Portal.InvitationResent": _l("Invitation resent"),
    "Portal.UserRoleChanged": _l("User role changed"),
    "Portal.UserAccessChanged": _l("User access changed"),
    "Portal.UserDeactivated": _l("User deactivated"),
    "Portal.UserReactivated": _l("User reactivated"),
    "Portal.UserMfaReset": _l("User's two-step verification reset"),
    "Portal.UserSessionsEnded": _l("User's sessions ended"),
    "Portal.NotificationPreferencesUpdated": _l("Notification preferences updated"),
    "Portal.Unsubscribed": _l("Unsubscribed from e-mails"),
    "Portal.InvoiceVoided": _l("Invoice voided"),
    "Portal.DisputeOpened": _l("Dispute opened"),
    "Portal.DisputeMessagePosted": _l("Dispute message posted"),
    "Portal.DisputeResolved": _l("Dispute resolved"),
    "Portal.DisputeWithdrawn": _l("Dispute withdrawn"),
    "Portal.DisputeAttachmentDownloaded": _l("Dispute attachment downloaded"),
}

# Portal.Login is recorded for each step of signing in, passed or not: (second factor, success).
LOGIN_LABELS = {
    (False, True): _l("Signed in"),
    (False, False): _l("Sign-in failed"),
    (True, True): _l("Two-step verification passed"),
    (True, False): _l("Two-step verification failed"),
}
SECOND_FACTORS = frozenset({"totp", "recovery_code"})

# The reason codes events carry (sign-in outcomes, why sessions ended, a dispute's reason); a
# reason not listed (an operator's own words) shows as it is.
REASON_LABELS = {
    "invalid": _l("Wrong password or code"),
    "locked": _l("Too many attempts: locked for now"),
    "disabled": _l("The user is deactivated"),
    "signed_out": _l("Signed out"),
    "deactivated": _l("User deactivated"),
    "mfa_reset": _l("Two-step verification reset"),
    "ended_by_administrator": _l("Ended by an administrator"),
    "password_changed": _l("Password changed"),
    "not_me": _l("“This wasn't me”"),
    **dict(reason_choices()),
}
HIDDEN_REASONS = frozenset({"ok"})  # a step that passed needs no reason

# The profile's fields, named as its form names them.
FIELD_LABELS = {
    "name": _l("Name"),
    "phone": _l("Phone"),
    "job_title": _l("Job title"),
    "locale": _l("Language"),
    "timezone": _l("Time zone"),
    "number_locale": _l("Number format"),
}

DETAIL_LABELS = {
    "invoices": _l("Invoices"),
    "amount": _l("Amount"),
    "fields": _l("Fields"),
    "user": _l("User"),
    "dispute": _l("Dispute"),
    "reference": _l("Reference"),
    "role": _l("Role"),
    "topic": _l("Topic"),
    "outcome": _l("Outcome"),
    "format": _l("Format"),
    "payment_method": _l("Payment Method"),
    "brand": _l("Brand"),
    "reason": _l("Reason"),
    "attachments": _l("Attachments"),
    "ended": _l("Sessions"),
    "payments_moved": _l("Scheduled payments moved"),
    "kind": _l("Alert"),
}


def admin_only(view: F) -> F:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_admin:
            abort(404)  # the very answer of a page that does not exist
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def event_label(name: str, properties: Mapping[str, Any] | None = None) -> str:
    """What happened, in words: a sign-in step says which step and whether it passed."""
    props = properties or {}
    if name == "Portal.Login" and isinstance(props.get("success"), bool):
        return str(LOGIN_LABELS[(props.get("factor") in SECOND_FACTORS, props["success"])])
    label = EVENT_LABELS.get(name)
    return str(label) if label is not None else name


def who_label(row: Row) -> str:
    found = activity.who(row)
    if found == "operator":
        return str(_("Operator"))
    return found or str(_("System"))


def details_of(row: Row) -> list[str]:
    """The row's details as the reader reads them (a passed step's "ok" reason left out)."""
    return [
        detail_text(kind, value)
        for kind, value in row.details
        if not (kind == "reason" and value in HIDDEN_REASONS)
    ]


def detail_text(kind: str, value: str) -> str:
    if kind == "amount":
        minor, _sep, currency = value.partition(":")
        value = money(int(minor), currency)
    elif kind == "fields":
        value = ", ".join(str(FIELD_LABELS.get(n, n)) for n in value.split(", "))
    elif kind == "reason":
        value = str(REASON_LABELS.get(value, value))
    elif kind == "kind":
        value = messages.alert_title(value)
    label = DETAIL_LABELS.get(kind)
    return f"{label}: {value}" if label is not None else value


def where_text(row: Row) -> str:
    browser, system = auth.describe_device(row.event.user_agent)
    parts = [row.event.ip_address] if row.event.ip_address else []
    if browser or system:
        parts.append(
            str(
                _(
                    "%(browser)s on %(system)s",
                    browser=browser or _("Unknown browser"),
                    system=system or _("unknown system"),
                )
            )
        )
    return " · ".join(parts)


def _query() -> tuple[ActivityQuery, dict[str, str], dict[str, str], list[Any]]:
    users = activity.company_users(db_session())
    query, problems = activity.read_query(request.args, [u.public_id for u in users])
    query = replace(query, zone=i18n.user_zone())
    errors = {name: date_message(problem) for name, problem in problems.items()}
    held = {
        "user": query.user,
        "kind": query.kind,
        "from": query.date_from.isoformat() if query.date_from else "",
        "to": query.date_to.isoformat() if query.date_to else "",
    }
    return query, {k: v for k, v in held.items() if v}, errors, users


def _page(
    query: ActivityQuery, args: dict[str, str], errors: dict[str, str], users: list[Any]
) -> Response:
    context = {
        "page": activity.list_events(db_session(), query),
        "query": query,
        "args": args,
        "errors": errors,
        "users": users,
        "groups": GROUP_LABELS,
        "event_label": event_label,
        "who_label": who_label,
        "details_of": details_of,
        "where_text": where_text,
        "earliest": dates.EARLIEST.isoformat(),
        "latest": dates.LATEST.isoformat(),
    }
    return render(
        "activity/index.html",
        context,
        fragments={"activity-results": "activity/_results.html"},
        status=400 if errors else 200,
    )


@bp.get("/activity")
@login_required
@admin_only
def index() -> Response:
    return _page(*_query())


def _csv(query: ActivityQuery) -> Iterator[str]:
    header = [_("When"), _("Who"), _("What"), _("Details"), _("IP address"), _("Device")]
    scope = tenancy.current_scope(db_session())

    @contextmanager
    def chunk_session() -> Iterator[Session]:
        # A session per chunk, read while the response streams (the request's committed at
        # its edge), bound to the request's scope and closed, its transaction with it, before
        # the chunk's rows are sent.
        session = Database.get().sessionmaker()
        try:
            tenancy.bind(session, scope)
            yield session
        finally:
            session.close()

    return activity.csv_lines([str(h) for h in header], _csv_rows(chunk_session, query))


def _csv_rows(
    sessions: Callable[[], AbstractContextManager[Session]], query: ActivityQuery
) -> Iterator[list[str]]:
    for chunk in activity.export_rows(sessions, query):
        for row in chunk:
            browser, system = auth.describe_device(row.event.user_agent)
            yield [
                format_datetime(row.event.created_at, "yyyy-MM-dd HH:mm:ss ZZZZZ"),
                who_label(row),
                event_label(row.event.name, row.event.properties),
                "; ".join(details_of(row)),
                row.event.ip_address,
                " / ".join(part for part in (browser, system) if part),
            ]


@bp.get("/activity.csv")
@login_required
@admin_only
@limiter.limit(EXPORT_LIMIT, key_func=lambda: f"activity-csv:{current_user.id}")
def export() -> Response:
    query, args, errors, users = _query()
    if errors:  # checked before the download starts: a 200 cannot take back its status
        return _page(query, args, errors, users)
    response = Response(stream_with_context(_csv(query)), mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="activity-{clock.today().isoformat()}.csv"'
    )
    response.headers["Cache-Control"] = "private, no-store"
    return response
