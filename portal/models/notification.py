"""Notifications: what the portal told a user, once per event, and when to remind them.

A `Notification` is the record that an event was notified (UNIQUE per user, topic and key, so
a job that runs twice notifies once), whether or not the user reads notifications in the portal
(`in_portal`) or by e-mail (`by_email`). Its text is never stored: the title and body are
rendered from (topic, params) in the reader's language when shown or mailed
(portal/notifications/messages.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, PublicIdMixin, UTCDateTime, str_enum, utcnow
from portal.models.mixins import CompanyOwned
from portal.models.user import NotificationTopic

REMIND_DAYS = (1, 3, 7, 14)  # the choices of "remind me N days before the due date"
DEFAULT_REMIND_DAYS = 3


class Notification(PublicIdMixin, CompanyOwned, Base):
    __tablename__ = "notifications"
    public_id_prefix = "ntf"
    __table_args__ = (
        UniqueConstraint("user_id", "topic", "key"),
        # The centre: a user's notifications newest first, and the header's unread count.
        Index("ix_notifications_user_shown_created", "user_id", "in_portal", "created_at"),
        Index("ix_notifications_user_shown_read", "user_id", "in_portal", "read_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("portal_users.id", ondelete="CASCADE"))
    topic: Mapped[NotificationTopic] = mapped_column(str_enum(NotificationTopic, "topic"))
    key: Mapped[str] = mapped_column(String(120))  # what makes it once: "due:INV-1003:2026-12-01"
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    link: Mapped[str | None] = mapped_column(String(300))  # a path inside the portal
    in_portal: Mapped[bool] = mapped_column(Boolean, default=True)  # shown in the centre
    by_email: Mapped[bool] = mapped_column(Boolean, default=False)  # a mail was asked for
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class NotificationSettings(CompanyOwned, Base):
    """A user's settings beyond the per-topic switches: how early a due date is reminded."""

    __tablename__ = "notification_settings"
    __table_args__ = (
        CheckConstraint(
            f"remind_days_before IN ({', '.join(str(d) for d in REMIND_DAYS)})",
            name="remind_days_choice",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("portal_users.id", ondelete="CASCADE"), unique=True
    )
    remind_days_before: Mapped[int] = mapped_column(Integer, default=DEFAULT_REMIND_DAYS)


class NotificationRun(Base):
    """How far a recurring notification job got (e.g. the invoices created up to when were
    announced). Global on purpose: the job reads it across companies, before any scope."""

    __tablename__ = "notification_runs"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    done_until: Mapped[datetime] = mapped_column(UTCDateTime())
