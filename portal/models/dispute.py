from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, PublicIdMixin, UTCDateTime, str_enum, utcnow
from portal.models.mixins import AccountOwned

if TYPE_CHECKING:
    from portal.models.document import CreditNote
    from portal.models.invoice import Invoice
    from portal.models.user import PortalUser


class DisputeReason(enum.StrEnum):
    INCORRECT_AMOUNT = "incorrect_amount"
    NOT_RECEIVED = "not_received"
    DUPLICATE = "duplicate"
    QUALITY = "quality"
    OTHER = "other"


class DisputeStatus(enum.StrEnum):
    OPEN = "open"
    UNDER_REVIEW = "under_review"
    CREDIT_ISSUED = "credit_issued"  # resolved with a credit note
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


# A dispute in one of these still holds its invoice ("Disputed"); the others are closed.
ACTIVE_DISPUTE = (DisputeStatus.OPEN, DisputeStatus.UNDER_REVIEW)


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
    # The outcome: why (a credit's or a rejection's reason), the credit note that resolved it,
    # when the customer withdrew it.
    outcome_reason: Mapped[str | None] = mapped_column(String(500))
    credit_note_id: Mapped[int | None] = mapped_column(
        ForeignKey("credit_notes.id", ondelete="SET NULL"), index=True
    )
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    messages: Mapped[list[DisputeMessage]] = relationship(
        back_populates="dispute", order_by=lambda: [DisputeMessage.created_at, DisputeMessage.id]
    )
    invoice: Mapped[Invoice] = relationship()
    credit_note: Mapped[CreditNote | None] = relationship()

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_DISPUTE


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
    author: Mapped[PortalUser | None] = relationship()
    attachments: Mapped[list[DisputeAttachment]] = relationship(
        back_populates="message", order_by="DisputeAttachment.id"
    )


class DisputeAttachment(PublicIdMixin, AccountOwned, Base):
    """A file sent with a message: kept in the file store under `storage_key`, its type the one
    its bytes show (never the name's or the browser's), opened only through a signed link."""

    __tablename__ = "dispute_attachments"
    public_id_prefix = "dat"
    __table_args__ = (CheckConstraint("size_bytes >= 0", name="size_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dispute_id: Mapped[int] = mapped_column(
        ForeignKey("disputes.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[int] = mapped_column(
        ForeignKey("dispute_messages.id", ondelete="CASCADE"), index=True
    )
    storage_key: Mapped[str] = mapped_column(String(300))
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    message: Mapped[DisputeMessage] = relationship(back_populates="attachments")
