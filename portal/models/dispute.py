from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, PublicIdMixin, UTCDateTime, str_enum, utcnow
from portal.models.mixins import AccountOwned


class DisputeReason(enum.StrEnum):
    INCORRECT_AMOUNT = "incorrect_amount"
    NOT_RECEIVED = "not_received"
    DUPLICATE = "duplicate"
    QUALITY = "quality"
    OTHER = "other"


class DisputeStatus(enum.StrEnum):
    OPEN = "open"
    UNDER_REVIEW = "under_review"
    RESOLVED = "resolved"
    REJECTED = "rejected"


class Dispute(PublicIdMixin, AccountOwned, Base):
    __tablename__ = "disputes"
    public_id_prefix = "dsp"
    __table_args__ = (CheckConstraint("amount_disputed >= 0", name="amount_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), index=True
    )
    opened_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("portal_users.id", ondelete="SET NULL")
    )
    reason: Mapped[DisputeReason] = mapped_column(str_enum(DisputeReason, "dispute_reason"))
    status: Mapped[DisputeStatus] = mapped_column(
        str_enum(DisputeStatus, "dispute_status"), default=DisputeStatus.OPEN
    )
    amount_disputed: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    messages: Mapped[list[DisputeMessage]] = relationship(
        back_populates="dispute", order_by="DisputeMessage.created_at"
    )


class DisputeMessage(AccountOwned, Base):
    __tablename__ = "dispute_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    dispute_id: Mapped[int] = mapped_column(
        ForeignKey("disputes.id", ondelete="CASCADE"), index=True
    )
    author_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("portal_users.id", ondelete="SET NULL")
    )
    author_kind: Mapped[str] = mapped_column(String(16), default="customer")  # or "staff"
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    dispute: Mapped[Dispute] = relationship(back_populates="messages")
