from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, PublicIdMixin, UTCDateTime, str_enum, utcnow
from portal.models.mixins import CompanyOwned


class StatementFormat(enum.StrEnum):
    PDF = "pdf"
    XLSX = "xlsx"
    CSV = "csv"


class StatementState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"  # "generating" on the page
    READY = "ready"
    FAILED = "failed"
    EXPIRED = "expired"  # was ready; its file is gone (retention)


# A statement still on its way: the page polls it, the sweep watches it.
IN_PROGRESS = (StatementState.QUEUED, StatementState.RUNNING)


class Statement(PublicIdMixin, CompanyOwned, Base):
    """A statement of account a user asked for, generated in the background.

    It is the requesting user's: only they list it and only links signed for them download it.
    `account_ids` names the billing accounts it covers (checked against the user's scope when it
    is asked for, and again when it is generated). Progress, the file and the outcome live here.
    """

    __tablename__ = "statements"
    public_id_prefix = "stm"
    __table_args__ = (
        CheckConstraint("start_date <= end_date", name="range_ordered"),
        CheckConstraint("progress >= 0 AND progress <= 100", name="progress_percent"),
        Index("ix_statements_user_created", "requested_by_user_id", "created_at"),
        Index("ix_statements_state", "state"),
        # A user's monthly statement is asked for once per month, however often the job runs.
        Index("ux_statements_user_period", "requested_by_user_id", "period", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    requested_by_user_id: Mapped[int] = mapped_column(
        ForeignKey("portal_users.id", ondelete="CASCADE")
    )
    account_ids: Mapped[list[Any]] = mapped_column(JSON)
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    format: Mapped[StatementFormat] = mapped_column(str_enum(StatementFormat, "statement_format"))
    locale: Mapped[str] = mapped_column(String(10))
    # "YYYY-MM" for the monthly statement the portal asked for itself (workers/jobs.py
    # `send_monthly_statements`); None for one a user asked for.
    period: Mapped[str | None] = mapped_column(String(7))
    state: Mapped[StatementState] = mapped_column(
        str_enum(StatementState, "statement_state"), default=StatementState.QUEUED
    )
    progress: Mapped[int] = mapped_column(Integer, default=0)  # percent, while generating
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # generation runs begun
    line_count: Mapped[int | None] = mapped_column(Integer)
    storage_key: Mapped[str | None] = mapped_column(String(300))
    filename: Mapped[str | None] = mapped_column(String(200))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Until when its file is kept (retention); then it is removed and the statement expires.
    available_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
