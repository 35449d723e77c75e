from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    and_,
)
from sqlalchemy.ext.hybrid import hybrid_method
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, PublicIdMixin, UTCDateTime, str_enum, utcnow
from portal.models.mixins import AccountOwned

if TYPE_CHECKING:
    from portal.models.company import BillingAccount


class InvoiceStatus(enum.StrEnum):
    """What is stored. "Overdue" is never stored: it follows from the due date."""

    OPEN = "open"
    PARTIALLY_PAID = "partially_paid"
    PROCESSING = "processing"  # a payment is on its way
    PAYMENT_FAILED = "payment_failed"  # the last payment attempt failed
    DISPUTED = "disputed"
    PAID = "paid"
    VOID = "void"


# Statuses in which the due date can make an invoice overdue.
OVERDUE_ELIGIBLE = (InvoiceStatus.OPEN, InvoiceStatus.PARTIALLY_PAID)
# Statuses that still count toward what the customer owes.
OUTSTANDING = (
    InvoiceStatus.OPEN,
    InvoiceStatus.PARTIALLY_PAID,
    InvoiceStatus.PROCESSING,
    InvoiceStatus.PAYMENT_FAILED,
    InvoiceStatus.DISPUTED,
)


class Invoice(PublicIdMixin, AccountOwned, Base):
    __tablename__ = "invoices"
    public_id_prefix = "inv"
    __table_args__ = (
        UniqueConstraint("company_id", "number"),
        CheckConstraint("subtotal >= 0", name="subtotal_not_negative"),
        CheckConstraint("tax_total >= 0", name="tax_not_negative"),
        CheckConstraint("total = subtotal + tax_total", name="total_adds_up"),
        CheckConstraint("amount_paid >= 0 AND amount_paid <= total", name="paid_within_total"),
        CheckConstraint(
            "amount_credited >= 0 AND amount_credited <= amount_paid", name="credit_within_settled"
        ),
        CheckConstraint("due_date >= issue_date", name="due_after_issue"),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
        Index("ix_invoices_account_issue", "billing_account_id", "issue_date"),
        Index("ix_invoices_account_due", "billing_account_id", "due_date"),
        Index("ix_invoices_company_status_due", "company_id", "status", "due_date"),
        # Behind the list's sorts for company-wide users (account users use the two above).
        Index("ix_invoices_company_issue", "company_id", "issue_date"),
        Index("ix_invoices_company_due", "company_id", "due_date"),
        Index("ix_invoices_company_total", "company_id", "total"),
        Index("ix_invoices_account_total", "billing_account_id", "total"),
        # Behind the dashboard's recent invoices, newest first.
        Index("ix_invoices_company_created", "company_id", "created_at"),
        Index("ix_invoices_account_created", "billing_account_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(40))
    reference: Mapped[str] = mapped_column(String(100), default="")  # the customer's PO
    issue_date: Mapped[date] = mapped_column(Date)
    due_date: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[int] = mapped_column(BigInteger)  # minor units
    tax_total: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int] = mapped_column(BigInteger)
    # What is settled of the total: payments and credit notes together (so the balance, its
    # check and the tallies' triggers have one column to read). `amount_credited` is the part
    # of it that credit notes settled; `paid_by_payments` the rest.
    amount_paid: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_credited: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Derived by the database, so it can never disagree with total and amount_paid.
    balance_due: Mapped[int] = mapped_column(
        BigInteger, Computed("total - amount_paid", persisted=True)
    )
    status: Mapped[InvoiceStatus] = mapped_column(
        str_enum(InvoiceStatus, "invoice_status"), default=InvoiceStatus.OPEN
    )
    notes: Mapped[str] = mapped_column(Text, default="")
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    # The version changes whenever the invoice row does (and guards concurrent writers).
    __mapper_args__: dict[str, Any] = {"version_id_col": version}

    billing_account: Mapped[BillingAccount] = relationship()
    lines: Mapped[list[InvoiceLine]] = relationship(
        back_populates="invoice", order_by="InvoiceLine.position", cascade="all, delete-orphan"
    )

    @property
    def paid_by_payments(self) -> int:
        return self.amount_paid - self.amount_credited

    @hybrid_method
    def is_overdue_on(self, today: date) -> bool:
        return self.status in OVERDUE_ELIGIBLE and self.due_date < today and self.balance_due > 0

    @is_overdue_on.expression
    @classmethod
    def _is_overdue_on(cls, today: date) -> Any:
        return and_(cls.status.in_(OVERDUE_ELIGIBLE), cls.due_date < today, cls.balance_due > 0)

    def display_status(self, today: date) -> str:
        """The status a person sees: "overdue" wins over open and partially paid."""
        return "overdue" if self.is_overdue_on(today) else self.status.value

    def days_overdue(self, today: date) -> int:
        return max(0, (today - self.due_date).days) if self.is_overdue_on(today) else 0


class InvoiceLine(AccountOwned, Base):
    __tablename__ = "invoice_lines"
    __table_args__ = (
        UniqueConstraint("invoice_id", "position"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(500))
    quantity: Mapped[Decimal] = mapped_column(Numeric(12, 3))
    unit_price: Mapped[int] = mapped_column(BigInteger)  # minor units
    tax_rate_bp: Mapped[int] = mapped_column(Integer, default=0)  # basis points: 825 = 8.25 %
    amount: Mapped[int] = mapped_column(BigInteger)  # quantity x unit price, before tax

    invoice: Mapped[Invoice] = relationship(back_populates="lines")


# The due date a tally row gets for invoices that owe nothing (paid, void, or a zero balance):
# for them the due date no longer matters, so they fold into one row per status.
SETTLED_DUE = date(1, 1, 1)


class InvoiceTally(AccountOwned, Base):
    """How many invoices, and how much they owe, per account, currency, status and due date.

    Kept by the database itself (triggers on `invoices`, migration 0009) in the same
    transaction as every insert, update or delete of an invoice, whoever writes it (the ORM, a
    bulk UPDATE of the payment flow, COPY). The dashboard's balances, counts and aging and the
    invoice list's counts read these rows, whose number follows the calendar (one per due date
    still owed on) rather than the number of invoices. Invoices that owe nothing are counted
    under SETTLED_DUE. Never written by the application; `flask --app wsgi tallies check`
    compares them with a count of the invoices.
    """

    __tablename__ = "invoice_tallies"

    billing_account_id: Mapped[int] = mapped_column(
        ForeignKey("billing_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), primary_key=True)
    due_date: Mapped[date] = mapped_column(Date, primary_key=True)
    invoice_count: Mapped[int] = mapped_column(BigInteger, default=0)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)  # minor units of `currency`
