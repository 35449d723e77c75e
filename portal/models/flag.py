from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, UTCDateTime, utcnow

# The runbook's rollout flags and their defaults when no row says otherwise.
DEFAULT_FLAGS: dict[str, bool] = {
    "m25_portal": True,
    "m25_portal_payment": True,
    "m25_portal_statements": True,
    "m25_portal_documents": True,
}


class FeatureFlag(Base):
    """Global, not tenant-owned: operators flip these with `flask flags set`."""

    __tablename__ = "feature_flags"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
