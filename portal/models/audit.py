from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, UTCDateTime, utcnow
from portal.models.mixins import HasCompany


class AuditEvent(HasCompany, Base):
    """Append-only: the database refuses UPDATE and DELETE on this table.

    company_id is NULL for events no company can be tied to (a sign-in with an unknown e-mail).
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_company_created", "company_id", "created_at"),)

    __company_nullable__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("portal_users.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(60), index=True)  # "Portal.Login"
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# A row here, inside one transaction, lets that transaction rewrite append-only history: only the
# operator purge (portal.services.seed.purge_companies) inserts one, and removes it before commit.
append_only_overrides = Table(
    "append_only_overrides",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("reason", String(60), nullable=False),
)
