from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, PublicIdMixin, UTCDateTime, str_enum, utcnow
from portal.models.mixins import CompanyOwned

if TYPE_CHECKING:
    from portal.models.company import BillingAccount, Company


class Role(enum.StrEnum):
    ADMIN = "customer.admin"
    CUSTOMER = "customer"


class UserStatus(enum.StrEnum):
    ACTIVE = "active"
    INVITED = "invited"
    DISABLED = "disabled"


class PortalUser(PublicIdMixin, CompanyOwned, Base):
    __tablename__ = "portal_users"
    public_id_prefix = "usr"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stored lower-cased
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(str_enum(Role, "role"))
    status: Mapped[UserStatus] = mapped_column(
        str_enum(UserStatus, "user_status"), default=UserStatus.ACTIVE
    )
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # MFA: the confirmed TOTP secret, encrypted at rest (portal.services.crypto). A secret not yet
    # confirmed lives on the session that asked for it (UserSession.mfa_pending_secret).
    # Failed attempts are counted in LoginThrottle, by address, like those for unknown ones.
    mfa_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    mfa_enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    mfa_last_step: Mapped[int | None] = mapped_column(Integer)  # last accepted TOTP step
    locale: Mapped[str | None] = mapped_column(String(16))
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Company user administration (migration 0014): who invited the user, and the invitation
    # link's nonce and time (a resent link gets a new nonce, which kills the old link); when an
    # administrator deactivated them.
    invited_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("portal_users.id", ondelete="SET NULL")
    )
    invitation_nonce: Mapped[str | None] = mapped_column(String(64))
    invitation_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Profile (migration 0013): phone in E.164, an IANA time zone (None: UTC), and the locale
    # numbers and money are written in (None: follow the language).
    phone: Mapped[str | None] = mapped_column(String(32))
    job_title: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str | None] = mapped_column(String(64))
    number_locale: Mapped[str | None] = mapped_column(String(16))
    # The address a change was asked to (migration 0020): the confirmation link names only the
    # user and a fingerprint of this and the current address, never an address.
    pending_email: Mapped[str | None] = mapped_column(String(254))

    company: Mapped[Company] = relationship(back_populates="users")
    grants: Mapped[list[UserAccountGrant]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )
    invited_by: Mapped[PortalUser | None] = relationship(
        remote_side="PortalUser.id", foreign_keys=[invited_by_user_id]
    )

    # What Flask-Login asks of a user object (kept here so models need no Flask import).
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.status is UserStatus.ACTIVE

    def get_id(self) -> str:
        return self.public_id

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def mfa_enrolled(self) -> bool:
        return self.mfa_enrolled_at is not None


class UserAccountGrant(CompanyOwned, Base):
    """A `customer` user may see this billing account."""

    __tablename__ = "user_account_grants"
    __table_args__ = (UniqueConstraint("user_id", "billing_account_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("portal_users.id", ondelete="CASCADE"))
    billing_account_id: Mapped[int] = mapped_column(
        ForeignKey("billing_accounts.id", ondelete="CASCADE"), index=True
    )

    user: Mapped[PortalUser] = relationship(back_populates="grants")
    billing_account: Mapped[BillingAccount] = relationship()


class RecoveryCode(CompanyOwned, Base):
    """A one-time MFA recovery code, stored hashed."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("portal_users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(255))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UserSession(PublicIdMixin, CompanyOwned, Base):
    """A server-side sign-in session; the cookie carries only its random token."""

    __tablename__ = "user_sessions"
    public_id_prefix = "ses"
    __table_args__ = (Index("ix_user_sessions_user_active", "user_id", "revoked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the token
    user_id: Mapped[int] = mapped_column(ForeignKey("portal_users.id", ondelete="CASCADE"))
    mfa_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())  # absolute lifetime
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A TOTP secret offered on /mfa/setup to this session only, encrypted; another session of
    # the same user gets its own, and confirming one discards them all.
    mfa_pending_secret: Mapped[bytes | None] = mapped_column(LargeBinary)

    user: Mapped[PortalUser] = relationship()


class LoginThrottle(Base):
    """Failed sign-in attempts (password or code) for one e-mail address, whether or not it has
    an account: one rule for both, so the lockout cannot tell which addresses exist.

    Global on purpose (read before any company is known, and for addresses of no company).
    Keyed by a keyed hash of the normalized address, so the table names nobody."""

    __tablename__ = "login_throttles"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class NotificationTopic(enum.StrEnum):
    """What the portal tells a user about (portal/notifications/: preferences, centre, mail)."""

    INVOICE_ISSUED = "invoice_issued"
    PAYMENT_DUE = "payment_due"
    PAYMENT_OVERDUE = "payment_overdue"
    PAYMENT_RECEIPT = "payment_receipt"
    PAYMENT_FAILED = "payment_failed"
    STATEMENT_READY = "statement_ready"
    MONTHLY_STATEMENT = "monthly_statement"
    DISPUTE_UPDATED = "dispute_updated"
    SECURITY_ALERT = "security_alert"  # never turned off (portal.services.notifications.FIXED)
    AUTOPAY = "autopay"
    CARD_EXPIRING = "card_expiring"


class NotificationChannel(enum.StrEnum):
    EMAIL = "email"
    PORTAL = "portal"


class NotificationPreference(CompanyOwned, Base):
    """A user's choice for one topic on one channel (`NotificationChannel`'s values). A missing
    row means the default (portal.services.notifications.DEFAULTS)."""

    __tablename__ = "notification_preferences"
    __table_args__ = (UniqueConstraint("user_id", "topic", "channel"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("portal_users.id", ondelete="CASCADE"))
    topic: Mapped[NotificationTopic] = mapped_column(str_enum(NotificationTopic, "topic"))
    channel: Mapped[str] = mapped_column(String(16), default="email")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
