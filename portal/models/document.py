from __future__ import annotations

import enum
from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, PublicIdMixin, UTCDateTime, utcnow
from portal.models.mixins import AccountOwned, OptionalAccountOwned

if TYPE_CHECKING:
    from portal.models.invoice import Invoice


class DocumentKind(enum.StrEnum):
    CONTRACT = "contract"
    CREDIT_NOTE = "credit_note"
    TAX_FORM = "tax_form"
    DELIVERY_NOTE = "delivery_note"
    OTHER = "other"


class Document(PublicIdMixin, OptionalAccountOwned, Base):
    """A file shared with the customer: contract, credit note, tax form, delivery note, ...

    Attached to a billing account (NULL: the whole company's, seen by company-wide users only)
    and possibly to one invoice. The bytes live in the file storage under `storage_path`."""

    __tablename__ = "documents"
    public_id_prefix = "doc"
    __table_args__ = (Index("ix_documents_company_created", "company_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int | None] = mapped_column(
        ForeignKey("invoices.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))  # a DocumentKind
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_path: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    invoice: Mapped[Invoice | None] = relationship()


class CreditNote(PublicIdMixin, AccountOwned, Base):
    """Credit given against one invoice: it lowers what the invoice still owes (the amount is
    added to the invoice's `amount_credited` and `amount_paid`, see Invoice) and shows on
    statements as a movement of its own. Its document, when there is one, is the paper."""

    __tablename__ = "credit_notes"
    public_id_prefix = "cn"
    __table_args__ = (
        UniqueConstraint("company_id", "number"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
        Index("ix_credit_notes_account_issue", "billing_account_id", "issue_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        ForeignKey("invoices.id", ondelete="RESTRICT"), index=True
    )
    document_id: Mapped[int | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL"), index=True
    )
    number: Mapped[str] = mapped_column(String(40))
    issue_date: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)  # minor units
    reason: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    invoice: Mapped[Invoice] = relationship()
    document: Mapped[Document | None] = relationship()
