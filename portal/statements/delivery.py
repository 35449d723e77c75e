"""The "Statement ready" mail: text and HTML, in the requester's language, with a signed link.

The link opens the file for 24 hours and only for the requester (portal/services/downloads.py);
it comes from PUBLIC_URL, never from a request. Sent at most once: the job that sends it is
handed off in the transaction that made the statement ready, and the outbox never sends a
message twice (portal/services/outbox.py).
"""

from __future__ import annotations

from datetime import datetime

from flask import render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from portal import tenancy
from portal.i18n import SUPPORTED_LOCALES
from portal.models import Company, PortalUser, Statement, StatementState
from portal.runtime import Runtime
from portal.services import downloads
from portal.services.downloads import FileKind


def language_of(locale: str) -> str:
    language = locale.split("_")[0]
    return language if language in SUPPORTED_LOCALES else SUPPORTED_LOCALES[0]


def mail_ready(runtime: Runtime, session: Session, statement_id: int, now: datetime) -> str:
    with tenancy.system(session):
        statement = session.get(Statement, statement_id)
        if statement is None or statement.state is not StatementState.READY:
            return "not ready"
        user = session.get(PortalUser, statement.requested_by_user_id)
        company = session.get(Company, statement.company_id)
        if user is None or company is None or not user.is_active:
            return "no recipient"
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
        }
        with force_locale(language_of(statement.locale)):
            subject = _("Your statement is ready")
            text = render_template("mail/statement_ready.txt", **context)
            html = render_template("mail/statement_ready.html", **context)
        address = user.email
    runtime.mailer.send(address, subject, text, html=html)
    return "sent"
