"""A notification by e-mail: text and HTML in the recipient's language, sent once.

Run by the job `workers.jobs.send_notification(<id>)`, handed off by `notify` in the
transaction that recorded the notification; the outbox never sends a message twice. The
preference is read again here: a user who turned the e-mail off in between gets nothing. Every
mail carries a signed one-click unsubscribe link for its user and topic (RFC 8058 headers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import render_template
from flask_babel import force_locale
from sqlalchemy.orm import Session

from portal import tenancy
from portal.i18n import language_of
from portal.models import Company, Notification, NotificationTopic, PortalUser
from portal.notifications import messages
from portal.runtime import Runtime
from portal.services import notifications

_ISOLATES = dict.fromkeys(map(ord, "\u2066\u2067\u2068\u2069"))


def plain(text: str) -> str:
    """Text without the Unicode isolates (mail subjects and text stay plain)."""
    return text.translate(_ISOLATES)


def locale_of(user: PortalUser, company: Company) -> str:
    return str(user.locale or company.locale or "en")


@dataclass(frozen=True)
class Unsubscribe:
    """The link a mail's footer shows and the headers that let a mail client use it."""

    link: str
    headers: dict[str, str]


def unsubscribe(
    runtime: Runtime, user: PortalUser, topic: NotificationTopic, now: datetime
) -> Unsubscribe:
    token = notifications.unsubscribe_token(user, topic, keys=runtime.settings.keyring, now=now)
    link = runtime.links.public(f"/unsubscribe/{token}")
    return Unsubscribe(
        link,
        {
            "List-Unsubscribe": f"<{link}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def send(runtime: Runtime, session: Session, notification_id: int, now: datetime) -> str:
    with tenancy.system(session):
        notification = session.get(Notification, notification_id)
        if notification is None:
            return "gone"
        user = session.get(PortalUser, notification.user_id)
        company = session.get(Company, notification.company_id)
        if user is None or company is None or not user.is_active:
            return "no recipient"
        if not notifications.channels(session, user, notification.topic)["email"]:
            return "opted out"
        locale = locale_of(user, company)
        leave = unsubscribe(runtime, user, notification.topic, now)
        link = runtime.links.public(notification.link) if notification.link else None
        with force_locale(language_of(locale)):
            message = messages.render(notification.topic, notification.params, locale)
            context = {
                "user": user,
                "company": company,
                "locale": locale,
                "title": plain(message.title),
                "body": plain(message.body),
                "html_title": message.title,
                "html_body": message.body,
                "link": link,
                "topic": messages.topic_label(notification.topic),
                "unsubscribe": leave.link,
                "preferences": runtime.links.public("/portal/notifications"),
            }
            subject = plain(message.title)
            text = render_template("mail/notifications/notification.txt", **context)
            html = render_template("mail/notifications/notification.html", **context)
        address = user.email
    runtime.mailer.send(address, subject, text, html=html, headers=leave.headers)
    return "sent"
