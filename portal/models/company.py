from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Boolean, CheckConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, PublicIdMixin, UTCDateTime, utcnow
from portal.models.mixins import CompanyOwned

if TYPE_CHECKING:
    from portal.models.user import PortalUser


class Company(PublicIdMixin, Base):
    """The customer, in accounts-receivable terms: who owes the money (the tenant)."""

    __tablename__ = "companies"
    public_id_prefix = "cmp"
    __table_args__ = (
        CheckConstraint("credit_limit >= 0", name="credit_limit_not_negative"),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # The receivables system's key for the company (migration 0022): what imports and the
    # operator API (`/api/ar/`) name it by. None for a company made only in the portal.
    code: Mapped[str | None] = mapped_column(String(40), index=True, unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    locale: Mapped[str] = mapped_column(String(16), default="en_US")
    credit_limit: Mapped[int] = mapped_column(BigInteger, default=0)  # minor units
    allow_partial_payments: Mapped[bool] = mapped_column(Boolean, default=True)
    gateway_customer_id: Mapped[str | None] = mapped_column(String(100))
    # Who the company asks about its bills (migration 0027), from the receivables system or the
    # seed: the footer of every signed-in page and the error pages name them. Phone in E.164.
    account_manager_name: Mapped[str | None] = mapped_column(String(200))
    account_manager_email: Mapped[str | None] = mapped_column(String(254))
    account_manager_phone: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    billing_accounts: Mapped[list[BillingAccount]] = relationship(
        back_populates="company", order_by="BillingAccount.name"
    )
    users: Mapped[list[PortalUser]] = relationship(back_populates="company")


class BillingAccount(PublicIdMixin, CompanyOwned, Base):
    """A ledger within the company (a site, a division) that invoices are billed to."""

    __tablename__ = "billing_accounts"
    public_id_prefix = "acct"
    __table_args__ = (UniqueConstraint("company_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    number: Mapped[str] = mapped_column(String(40))
    bill_to: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    company: Mapped[Company] = relationship(back_populates="billing_accounts")
