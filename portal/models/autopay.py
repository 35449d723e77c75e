"""Autopay: a billing account's standing consent to charge a saved method, and what it did.

`AutopaySetting` is one per billing account: the method, when to charge (on the due date, or N
days after the issue date), how many days before to send the notice, who consented and when,
and whether it is on (and if not, why it was turned off). `AutopayStep` is one row per
(invoice, kind, attempt): the notice, each charge attempt (with the payment it made), a skip, a
disputed invoice passed over, the end of the retries. Its UNIQUE constraint is what makes each
happen once, however often or concurrently the job runs (portal/services/autopay.py).
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, PublicIdMixin, UTCDateTime, str_enum, utcnow
from portal.models.mixins import AccountOwned

MAX_DAYS_AFTER_ISSUE = 90
MAX_NOTICE_DAYS = 14


class AutopayTiming(enum.StrEnum):
    DUE_DATE = "due_date"  # on the invoice's due date
    AFTER_ISSUE = "after_issue"  # N days after its issue date


class AutopayOff(enum.StrEnum):
    """Why a setting is off (None while it is on)."""

    USER = "user"  # turned off on the page
    METHOD_REMOVED = "method_removed"
    CONSENT_LOST = "consent_lost"  # the consenting user was deactivated or lost the right


class AutopayStepKind(enum.StrEnum):
    NOTICE = "notice"  # "we will charge … on {day}"
    CHARGE = "charge"  # an attempt (1, 2, 3), with its payment
    SKIPPED = "skipped"  # the customer skipped the invoice (the signed link or the page)
    DISPUTED = "disputed"  # disputed on its charge day: passed over, never charged
    STOPPED = "stopped"  # the last attempt failed: no more tries


class AutopaySetting(PublicIdMixin, AccountOwned, Base):
    __tablename__ = "autopay_settings"
    public_id_prefix = "apy"
    __table_args__ = (
        UniqueConstraint("billing_account_id"),
        CheckConstraint(
            f"days_after_issue BETWEEN 0 AND {MAX_DAYS_AFTER_ISSUE}", name="days_after_issue_range"
        ),
        CheckConstraint(f"notice_days BETWEEN 0 AND {MAX_NOTICE_DAYS}", name="notice_days_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_method_id: Mapped[int] = mapped_column(
        ForeignKey("payment_methods.id", ondelete="RESTRICT"), index=True
    )
    timing: Mapped[AutopayTiming] = mapped_column(str_enum(AutopayTiming, "autopay_timing"))
    days_after_issue: Mapped[int] = mapped_column(Integer, default=0)
    notice_days: Mapped[int] = mapped_column(Integer, default=3)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    off_reason: Mapped[AutopayOff | None] = mapped_column(str_enum(AutopayOff, "autopay_off"))
    off_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    off_told: Mapped[bool] = mapped_column(Boolean, default=True)  # its "turned off" notice
    consented_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("portal_users.id", ondelete="SET NULL"), index=True
    )
    consented_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AutopayStep(AccountOwned, Base):
    __tablename__ = "autopay_steps"
    __table_args__ = (UniqueConstraint("invoice_id", "kind", "attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"))
    kind: Mapped[AutopayStepKind] = mapped_column(str_enum(AutopayStepKind, "autopay_step"))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    day: Mapped[date] = mapped_column(Date)  # the charge day it was about (or ran on)
    payment_id: Mapped[int | None] = mapped_column(
        ForeignKey("payments.id", ondelete="RESTRICT"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("portal_users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
