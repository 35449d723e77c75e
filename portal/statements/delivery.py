"""Telling the requester their statement is ready: a notification, and its own mail.

`announce` runs in the transaction that made the statement ready: a statement a user asked for
is a STATEMENT_READY notification (once per statement: the centre's row, and this module's
mail when the e-mail channel is on); the monthly statement the portal asked for itself
(`period`) is the MONTHLY_STATEMENT notification of its month (`monthly:<YYYY-MM>`, the generic
notification mail), once per user and month.

The "Statement ready" mail: text and HTML, in the requester's language, with a signed link that
opens the file for 24 hours and only for the requester (portal/services/downloads.py); it comes
from PUBLIC_URL, never from a request. Sent at most once (the outbox never sends a message
twice), only if the e-mail channel is still on when it goes, with the unsubscribe link and
RFC 8058 headers of every notification mail.
"""

from __future__ import annotations

from datetime import datetime

from flask import render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from portal import tenancy
from portal.i18n import language_of
from portal.models import Company, NotificationTopic, PortalUser, Statement, StatementState
from portal.notifications import mail as notification_mail
from portal.notifications import messages, notify
from portal.runtime import SEND_STATEMENT_READY, Runtime
from portal.services import downloads, notifications
from portal.services.downloads import FileKind
from portal.statements.service import subject

STATEMENTS_PAGE = "/portal/statements"


def announce(runtime: Runtime, session: Session, statement_id: int) -> None:
    """Notify the requester of their ready statement (see the module's docstring). Never
    commits; the caller's transaction made it ready."""
    with tenancy.system(session):
        statement = session.get(Statement, statement_id)
        if statement is None:
            return
        user = session.get(PortalUser, statement.requested_by_user_id)
        if user is None:
            return
        if statement.period is not None:
            notify(
                runtime,
                session,
                user,
                NotificationTopic.MONTHLY_STATEMENT,
                key=f"monthly:{statement.period}",
                params={"month": statement.period},
                link=STATEMENTS_PAGE,
            )
            return
        notify(
            runtime,
            session,
            user,
            NotificationTopic.STATEMENT_READY,
            key=f"statement:{statement.public_id}",
            params={
                "start": statement.start_date.isoformat(),
                "end": statement.end_date.isoformat(),
            },
            link=STATEMENTS_PAGE,
            mail=(SEND_STATEMENT_READY, (statement.id,), subject(statement.id)),
        )


def mail_ready(runtime: Runtime, session: Session, statement_id: int, now: datetime) -> str:
    with tenancy.system(session):
        statement = session.get(Statement, statement_id)
        if statement is None or statement.state is not StatementState.READY:
            return "not ready"
        user = session.get(PortalUser, statement.requested_by_user_id)
        company = session.get(Company, statement.company_id)
        if user is None or company is None or not user.is_active:
            return "no recipient"
        topic = NotificationTopic.STATEMENT_READY
        if not notifications.channels(session, user, topic)["email"]:
            return "opted out"
        leave = notification_mail.unsubscribe(runtime, user, topic, now)
        token = downloads.sign(
            FileKind.STATEMENT,
            statement.public_id,
            user.public_id,
            keys=runtime.settings.keyring,
            now=now,
        )
        context = {
            "user": user,
            "company": company,
            "statement": statement,
            "locale": statement.locale,
            "link": runtime.links.public_for("downloads.fetch", token=token),
            "page": runtime.links.public_for("statements.index"),
            "expires": now + downloads.LIFETIME,
            "unsubscribe": leave.link,
            "preferences": runtime.links.public("/portal/notifications"),
        }
        with force_locale(language_of(statement.locale)):
            context["topic"] = messages.topic_label(topic)
            title = _("Your statement is ready")
            text = render_template("mail/statement_ready.txt", **context)
            html = render_template("mail/statement_ready.html", **context)
        address = user.email
    runtime.mailer.send(address, title, text, html=html, headers=leave.headers)
    return "sent"
