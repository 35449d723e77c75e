"""Security alerts: what was told about an account's security, and where its user signs in from.

A `SecurityAlert` is one event (a sign-in from somewhere new, a burst of failed attempts, an MFA
reset, a new API token, a changed password or address, a payment method added), once per
(user, kind, key); `mailed` says whether it went out by e-mail (alerts past the rate limit are
recorded, shown and digested, never mailed). `secured_at`: its "This wasn't me" link was used.

A `SignInOrigin` is a device (browser and system family) or a network (IPv4 /24, IPv6 /48) the
user completed a sign-in from, stored as a keyed hash, with when it was last seen: a sign-in from
one not seen for 90 days is alerted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, PublicIdMixin, UTCDateTime, utcnow
from portal.models.mixins import CompanyOwned


class SecurityAlert(PublicIdMixin, CompanyOwned, Base):
    __tablename__ = "security_alerts"
    public_id_prefix = "sal"
    __table_args__ = (
        UniqueConstraint("user_id", "kind", "key"),
        Index("ix_security_alerts_user_created", "user_id", "created_at"),
        Index("ix_security_alerts_company_created", "company_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("portal_users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(80))
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    device: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    mailed: Mapped[bool] = mapped_column(Boolean, default=False)
    secured_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SignInOrigin(CompanyOwned, Base):
    __tablename__ = "sign_in_origins"
    __table_args__ = (UniqueConstraint("user_id", "kind", "key_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("portal_users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # "device", "network" or "secured" (a marker)
    key_hash: Mapped[str] = mapped_column(String(64))
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
