from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, PublicIdMixin, UTCDateTime, str_enum, utcnow
from portal.models.mixins import OptionalAccountOwned


class StatementFormat(enum.StrEnum):
    PDF = "pdf"
    XLSX = "xlsx"
    CSV = "csv"


class StatementState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


class Statement(PublicIdMixin, OptionalAccountOwned, Base):
    """A statement of account the customer asked for; generated in the background."""

    __tablename__ = "statements"
    public_id_prefix = "stm"
    __table_args__ = (
        CheckConstraint("start_date <= end_date", name="range_ordered"),
        Index("ix_statements_company_created", "company_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    requested_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("portal_users.id", ondelete="SET NULL")
    )
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    format: Mapped[StatementFormat] = mapped_column(str_enum(StatementFormat, "statement_format"))
    state: Mapped[StatementState] = mapped_column(
        str_enum(StatementState, "statement_state"), default=StatementState.QUEUED
    )
    file_path: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
