"""Security alerts: telling a user (and their company's admins, daily) what happened to their
account's security. Each trigger (a route, the CLI, a job) makes one call here.

`alert` records the event once (portal/services/security_alerts.py: its row and its
`Portal.SecurityAlert` audit event) and notifies it through `notify` with the SECURITY_ALERT
topic, which no preference turns off: shown in the centre, mailed by `send_alert` (text and HTML
in the user's language and time zone, a "This wasn't me" link, no unsubscribe) unless the user's
alert mails reached the rate limit (3 an hour, 10 a day: the rest are recorded, shown and
digested, never mailed, so an attack cannot flood a mailbox).

A burst of failed attempts is handed to a job (`failed_attempt`) for every address that reaches
the threshold, known or not, so the sign-in answer and its work never tell which addresses have
accounts; the job alone looks the address up. The admins' digest (`send_digests`, recurring)
mails each company admin yesterday's alerts of their company's users, once per admin and day.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta

from flask import render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import clock, tenancy
from portal.db import new_public_id
from portal.i18n import language_of
from portal.models import (
    Company,
    Notification,
    NotificationTopic,
    PortalUser,
    Role,
    SecurityAlert,
    UserStatus,
)
from portal.notifications import messages, notify
from portal.notifications.mail import locale_of, plain
from portal.runtime import JOBS, SEND_PASSWORD_RESET, Runtime
from portal.services import audit, auth, notifications
from portal.services import security_alerts as domain
from portal.services.security_alerts import Kind

SEND_ALERT = f"{JOBS}.send_security_alert"
SEND_DIGEST = f"{JOBS}.send_security_digest"
BURST_ALERT = f"{JOBS}.security_burst_alert"
TOPIC = NotificationTopic.SECURITY_ALERT
SECURITY_PAGE = "/portal/security"

__all__ = ["Kind", "alert", "failed_attempt", "signed_in"]


def alert(
    runtime: Runtime,
    session: Session,
    user: PortalUser,
    kind: Kind,
    *,
    request: audit.RequestInfo,
    key: str | None = None,
    to: str | None = None,
    at: datetime | None = None,
) -> SecurityAlert | None:
    """Alert `user` of `kind` (once per `key`, when given: a reload or a rerun alerts once):
    recorded and audited always, shown in the centre, mailed within the rate limit. `to`: the
    address to mail instead of the user's own (an e-mail change is told to the address the
    account moved away from, where its owner still reads, never only to the one just chosen).
    `at`: when it happened, if earlier than now (a job's late run tells the event's time)."""
    if not user.is_active:
        return None
    now = at or clock.now()
    event = domain.record(session, user, kind, request=request, now=now, key=key)
    if event is None:
        return None
    params: dict[str, str | int] = {
        "kind": kind.value,
        "at": now.isoformat(),
        "tz": user.timezone or "",
        "ip": event.ip_address,
        "device": event.device,
    }
    # The user's own row, wherever the trigger runs: signed out (a reset link, a burst job, the
    # CLI) no company scope is bound yet.
    with tenancy.system(session):
        notify(
            runtime,
            session,
            user,
            TOPIC,
            key=f"alert:{event.public_id}",
            params=params,
            link=SECURITY_PAGE,
            # To the address the account has now, however late the queue mails it (an
            # intruder's e-mail change right after must not take the alert with it).
            mail=(SEND_ALERT, (event.id, to or user.email), f"security-alert:{event.id}"),
            email=event.mailed,
        )
    return event


def signed_in(
    runtime: Runtime, session: Session, user: PortalUser, *, request: audit.RequestInfo
) -> SecurityAlert | None:
    """Both factors passed: note where from, and alert a device or network new for the user."""
    origin = domain.note_sign_in(
        session, user, request, keys=runtime.settings.keyring, now=clock.now()
    )
    if not origin.is_new:
        return None
    return alert(runtime, session, user, Kind.NEW_SIGN_IN, request=request)


def failed_attempt(
    runtime: Runtime, session: Session, email: str, failures: int, *, request: audit.RequestInfo
) -> None:
    """A failed password or code left `failures` in the address's window: at the threshold the
    alert is handed to a job, for every address alike (the job alone looks it up). A lockout
    configured to lock sooner (LOCKOUT_THRESHOLD under 3) makes its lock the burst."""
    if failures != min(domain.BURST_THRESHOLD, runtime.settings.lockout_threshold):
        return
    runtime.hand_off(
        session,
        BURST_ALERT,
        auth.normalize_email(email),
        new_public_id("burst"),
        asdict(request),
        clock.now().isoformat(),  # when it happened, however late the job runs
    )


def burst(
    runtime: Runtime,
    session: Session,
    email: str,
    key: str,
    request: dict[str, str],
    at: str | None = None,
) -> str:
    """The job's half of `failed_attempt`: the alert, if the address has an active account,
    at the time of the failure (`at`, ISO 8601) however late the job runs."""
    user = auth.find_user_by_email(session, email)
    if user is None or not user.is_active:
        return "no account"
    when = datetime.fromisoformat(at) if at else None
    found = alert(
        runtime,
        session,
        user,
        Kind.FAILED_ATTEMPTS,
        request=audit.RequestInfo(**request),
        key=key,
        at=when,
    )
    return "alerted" if found is not None else "already"


# the mail ----------------------------------------------------------------------------------


def _message(
    runtime: Runtime,
    user: PortalUser,
    company: Company,
    event: SecurityAlert,
    now: datetime,
    to: str | None,
) -> tuple[str, str, str]:
    locale = locale_of(user, company)
    keys = runtime.settings.keyring
    token = domain.not_me_token(user, event, keys=keys, now=now, address=to or user.email)
    params = {
        "kind": event.kind,
        "at": event.created_at.isoformat(),
        "tz": user.timezone or "",
        "ip": event.ip_address,
        "device": event.device,
    }
    with force_locale(language_of(locale)):
        message = messages.render(TOPIC, params, locale)
        context = {
            "user": user,
            "locale": locale,
            "title": plain(message.title),
            "body": plain(message.body),
            "html_title": message.title,
            "html_body": message.body,
            "not_me": runtime.links.public_for("security_alerts.not_me", token=token),
            "security": runtime.links.public(SECURITY_PAGE),
        }
        text = render_template("mail/security_alert.txt", **context)
        html = render_template("mail/security_alert.html", **context)
    return plain(message.title), text, html


def send_alert(
    runtime: Runtime, session: Session, alert_id: int, now: datetime, to: str | None = None
) -> str:
    """Mail one alert (the job `send_security_alert`) to `to`, the address the account had when
    it happened (or the one an e-mail change moved away from; the user's current one for a job
    queued without it); its link names that address and gives it back if the account has left
    it. No unsubscribe: security alerts are always on, and the mail says so."""
    with tenancy.system(session):
        event = session.get(SecurityAlert, alert_id)
        if event is None:
            return "gone"
        user = session.get(PortalUser, event.user_id)
        company = session.get(Company, event.company_id)
        if user is None or company is None or not user.is_active:
            return "no recipient"
        subject, text, html = _message(runtime, user, company, event, now, to)
        address = to or user.email
    runtime.mailer.send(address, subject, text, html=html)
    return "sent"


def not_me_done(
    runtime: Runtime,
    session: Session,
    user: PortalUser,
    event: SecurityAlert,
    *,
    request: audit.RequestInfo,
    restore_email: str | None = None,
) -> bool:
    """ "This wasn't me": every session and token ended, the password unusable, and (once within
    minutes) a password-reset link mailed; whether a new mail went out. `restore_email`: the
    address the link was mailed to, given back first if the account left it (an intruder's
    e-mail change), so the reset link goes there."""
    fresh = domain.secure_account(
        session, user, event, now=clock.now(), request=request, restore_email=restore_email
    )
    if fresh:
        locale = locale_of(user, user.company)
        runtime.hand_off(session, SEND_PASSWORD_RESET, user.email, locale, asdict(request))
    return fresh


# the admins' daily digest ------------------------------------------------------------------


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def send_digests(runtime: Runtime, session: Session, now: datetime) -> dict[str, int]:
    """Ask for yesterday's (UTC) digest of every company with alerts, once per admin and day
    (the notification's UNIQUE key makes a second run, or two at once, ask for nothing)."""
    day = (now - timedelta(days=1)).date()
    start, end = _day_bounds(day)
    asked = 0
    companies = domain.companies_with_alerts(session, start, end)
    with tenancy.system(session):
        admins = list(
            session.scalars(
                select(PortalUser)
                .where(
                    PortalUser.company_id.in_(companies),
                    PortalUser.role == Role.ADMIN,
                    PortalUser.status == UserStatus.ACTIVE,
                )
                .order_by(PortalUser.id)
            )
        )
        for admin in admins:
            row = notifications.record(
                session,
                admin,
                TOPIC,
                key=f"digest:{day.isoformat()}",
                params={"digest": day.isoformat()},
                link=None,
                in_portal=False,
                by_email=True,
                now=now,
            )
            if row is not None:
                runtime.hand_off(session, SEND_DIGEST, row.id, subject=f"security-digest:{row.id}")
                asked += 1
    return {"companies": len(companies), "digests": asked}


def send_digest(runtime: Runtime, session: Session, notification_id: int) -> str:
    """Mail one admin the digest their notification row stands for."""
    with tenancy.system(session):
        row = session.get(Notification, notification_id)
        if row is None:
            return "gone"
        admin = session.get(PortalUser, row.user_id)
        company = session.get(Company, row.company_id)
        if admin is None or company is None or not admin.is_active:
            return "no recipient"
        day = date.fromisoformat(str(row.params.get("digest")))
        lines, total = domain.company_alerts(session, company.id, *_day_bounds(day))
        if not lines:
            return "nothing"
        locale = locale_of(admin, company)
        with force_locale(language_of(locale)):
            items = [
                {
                    "who": line.email,
                    "what": plain(messages.alert_title(line.kind)),
                    "when": messages.alert_time(
                        line.created_at.isoformat(), admin.timezone or "", locale
                    ),
                    "ip": line.ip_address,
                    "device": line.device,
                }
                for line in lines
            ]
            subject = _("Security alerts of your company's users: %(count)d", count=total)
            context = {
                "user": admin,
                "company": company,
                "items": items,
                "more": total - len(items),
                "locale": locale,
            }
            text = plain(render_template("mail/security_digest.txt", **context))
            html = render_template("mail/security_digest.html", **context)
        address = admin.email
    runtime.mailer.send(address, plain(subject), text, html=html)
    return "sent"
