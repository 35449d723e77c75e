from __future__ import annotations

import enum
from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, PublicIdMixin, UTCDateTime, str_enum, utcnow
from portal.models.mixins import AccountOwned, CompanyOwned, OptionalAccountOwned

if TYPE_CHECKING:
    from portal.models.invoice import Invoice


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"  # created with its idempotency key, not yet submitted
    SCHEDULED = "scheduled"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class PaymentMethodKind(enum.StrEnum):
    CARD = "card"
    BANK_ACCOUNT = "bank_account"


class PaymentMethod(PublicIdMixin, CompanyOwned, Base):
    """A gateway token and what may be shown of it; never a card number."""

    __tablename__ = "payment_methods"
    public_id_prefix = "pm"
    __table_args__ = (
        Index(
            "uq_payment_methods_one_default",
            "company_id",
            unique=True,
            sqlite_where=text("is_default AND removed_at IS NULL"),
            postgresql_where=text("is_default AND removed_at IS NULL"),
        ),
        CheckConstraint("length(last4) = 4", name="last4_len"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("portal_users.id", ondelete="SET NULL")
    )
    gateway: Mapped[str] = mapped_column(String(20))
    gateway_token: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[PaymentMethodKind] = mapped_column(str_enum(PaymentMethodKind, "method_kind"))
    brand: Mapped[str] = mapped_column(String(40))  # "visa", "bank"
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int | None] = mapped_column(Integer)
    exp_year: Mapped[int | None] = mapped_column(Integer)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def is_expired(self, today: date) -> bool:
        if self.exp_year is None or self.exp_month is None:
            return False
        return (self.exp_year, self.exp_month) < (today.year, today.month)


class Payment(PublicIdMixin, OptionalAccountOwned, Base):
    """Money the customer sends. Account is NULL when the invoices span several accounts.

    Rows are never deleted and their amount, currency and key never change (database triggers).
    """

    __tablename__ = "payments"
    public_id_prefix = "pay"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
        Index("ix_payments_company_created", "company_id", "created_at"),
        Index("ix_payments_status_scheduled", "status", "scheduled_for"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("portal_users.id", ondelete="SET NULL"))
    payment_method_id: Mapped[int | None] = mapped_column(
        ForeignKey("payment_methods.id", ondelete="RESTRICT")
    )
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)  # minor units
    status: Mapped[PaymentStatus] = mapped_column(
        str_enum(PaymentStatus, "payment_status"), default=PaymentStatus.PENDING
    )
    scheduled_for: Mapped[date | None] = mapped_column(Date)
    gateway: Mapped[str] = mapped_column(String(20))
    gateway_reference: Mapped[str | None] = mapped_column(String(120), unique=True)
    failure_code: Mapped[str | None] = mapped_column(String(60))
    failure_message: Mapped[str | None] = mapped_column(String(300))
    receipt_number: Mapped[str | None] = mapped_column(String(40), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Where the customer completes an authentication step the gateway asked for (3-D Secure).
    action_url: Mapped[str | None] = mapped_column(String(500))
    # When the charge was first asked for (a scheduled payment: its day, not when it was made);
    # reconciliation and the 3-D Secure timeout count from here.
    charging_since: Mapped[datetime | None] = mapped_column(UTCDateTime())

    payment_method: Mapped[PaymentMethod | None] = relationship()
    allocations: Mapped[list[PaymentAllocation]] = relationship(
        back_populates="payment", order_by="PaymentAllocation.id"
    )


class PaymentAllocation(AccountOwned, Base):
    """The part of a payment applied to one invoice (append-only)."""

    __tablename__ = "payment_allocations"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(
        ForeignKey("payments.id", ondelete="RESTRICT"), index=True
    )
    invoice_id: Mapped[int] = mapped_column(
        ForeignKey("invoices.id", ondelete="RESTRICT"), index=True
    )
    amount: Mapped[int] = mapped_column(BigInteger)

    payment: Mapped[Payment] = relationship(back_populates="allocations")
    invoice: Mapped[Invoice] = relationship()
