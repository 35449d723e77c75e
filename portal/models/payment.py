from __future__ import annotations

import enum
import re
import secrets
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

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
from portal.models.mixins import AccountOwned, CompanyOwned

if TYPE_CHECKING:
    from portal.models.company import BillingAccount
    from portal.models.invoice import Invoice

# A payment's human reference: "PMT-" and eight characters of Crockford's base32 (no I, L, O or
# U to misread), seven random and a Luhn mod 32 check character that catches any one mistyped
# character and most swapped neighbours. Random, so it says nothing about anyone's volume.
REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_PREFIX = "PMT"
_REFERENCE = re.compile(
    rf"^{REFERENCE_PREFIX}-([{REFERENCE_ALPHABET}]{{4}})-([{REFERENCE_ALPHABET}]{{4}})$"
)


def _luhn_sum(code: str, *, double_last: bool) -> int:
    base = len(REFERENCE_ALPHABET)
    total = 0
    double = double_last
    for char in reversed(code):
        value = REFERENCE_ALPHABET.index(char) * (2 if double else 1)
        total += value // base + value % base
        double = not double
    return total


def new_reference() -> str:
    body = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(7))
    base = len(REFERENCE_ALPHABET)
    check = REFERENCE_ALPHABET[(base - _luhn_sum(body, double_last=True) % base) % base]
    code = body + check
    return f"{REFERENCE_PREFIX}-{code[:4]}-{code[4:]}"


def valid_reference(text: str) -> bool:
    """Well formed and its check character matches (a typed reference, before any lookup)."""
    match = _REFERENCE.match(text.strip().upper())
    if match is None:
        return False
    code = match.group(1) + match.group(2)
    return _luhn_sum(code, double_last=False) % len(REFERENCE_ALPHABET) == 0


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


class PaymentGroup(PublicIdMixin, CompanyOwned, Base):
    """Invoices of several billing accounts paid in one go: one form, one idempotency key, and
    underneath one payment per account, each with a key derived from the group's."""

    __tablename__ = "payment_groups"
    public_id_prefix = "pgr"

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("portal_users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    payments: Mapped[list[Payment]] = relationship(back_populates="group", order_by="Payment.id")


class Payment(PublicIdMixin, AccountOwned, Base):
    """Money the customer sends, for the invoices of one billing account (history, receipts and
    a restricted user's view rely on that). Several accounts paid at once are a PaymentGroup.

    Rows are never deleted; their amount, currency, key, reference and group never change
    (database triggers).
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
    # What people see and quote, from the moment the payment exists (see new_reference).
    reference: Mapped[str] = mapped_column(String(20), unique=True)
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("payment_groups.id", ondelete="RESTRICT"), index=True
    )
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
    group: Mapped[PaymentGroup | None] = relationship(back_populates="payments")
    billing_account: Mapped[BillingAccount] = relationship()

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("reference", new_reference())
        super().__init__(**kwargs)

    @property
    def receipt_number(self) -> str | None:
        """A succeeded payment's receipt carries its reference: one number, whatever happens."""
        return self.reference if self.status is PaymentStatus.SUCCEEDED else None


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
