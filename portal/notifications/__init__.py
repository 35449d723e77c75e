"""Notifications: telling a user, once per event, in the portal and by e-mail.

`notify` is the one way in (disputes, payments, statements and the reminders job call it). It
records the event once per (user, topic, key), whatever the user's channels, and honours their
preferences: the portal channel shows the row in the centre, the e-mail channel hands off
`workers.jobs.send_notification(<id>)` through the outbox in the caller's transaction (one mail,
checked against the preference again when sent: portal/notifications/mail.py). The words are
rendered when read (portal/notifications/messages.py).

A topic with a mail of its own (a payment's receipt or failure, a statement's download link)
passes that job as `mail`: the same record, the same once, the same preference, its own words
(the job checks the preference again and carries the same unsubscribe link and headers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from portal import clock
from portal.models import Notification, NotificationTopic, PortalUser
from portal.runtime import JOBS, Runtime
from portal.services import notifications

SEND_NOTIFICATION = f"{JOBS}.send_notification"


def about(notification_id: int) -> str:
    """The outbox subject of a notification's mail."""
    return f"notification:{notification_id}"


def notify(
    runtime: Runtime,
    session: Session,
    user: PortalUser,
    topic: NotificationTopic,
    *,
    key: str,
    params: Mapping[str, str | int],
    link: str | None = None,
    mail: tuple[str, Sequence[Any], str] | None = None,
    email: bool = True,
) -> Notification | None:
    """Notify `user` of an event, once per `key`: the new notification, or None when this key
    was notified before (or the user is not active). Never commits. `mail`: (job, args,
    outbox subject) of the topic's own mail, handed off instead of `send_notification`.
    `email=False`: recorded and shown, never mailed (a security alert past its rate limit)."""
    if not user.is_active:
        return None
    wanted = notifications.channels(session, user, topic)
    notification = notifications.record(
        session,
        user,
        topic,
        key=key,
        params=params,
        link=link,
        in_portal=wanted["portal"],
        by_email=wanted["email"] and email,
        now=clock.now(),
    )
    if notification is None:
        return None
    if notification.by_email and mail is not None:
        job, args, subject = mail
        runtime.hand_off(session, job, *args, subject=subject)
    elif notification.by_email:
        runtime.hand_off(
            session, SEND_NOTIFICATION, notification.id, subject=about(notification.id)
        )
    return notification
