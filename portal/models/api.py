"""The JSON API's credentials and the receivables side's event feed.

`ApiToken`: a personal token a user creates on /portal/security (or the short-lived one
`/api/portal/login` hands out), sent as `Authorization: Bearer`. Only its sha256 is stored; the
token itself is shown once. `ArKey`: an operator key for `/api/ar/` (the receivables system),
created by `flask --app wsgi ar-keys create`, global. `ArEvent`: what the receivables system
learns of (payments made and failed, disputes, profile changes), written in the same
transaction as the change and read in commit order through `/api/ar/events?after=`.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, FetchedValue, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, PublicIdMixin, UTCDateTime, str_enum, utcnow
from portal.models.mixins import CompanyOwned
from portal.models.user import PortalUser


class TokenScope(enum.StrEnum):
    READ = "read"  # read-only: every GET of /api/portal/
    PAY = "read+pay"  # read, and pay invoices the user may pay


class TokenKind(enum.StrEnum):
    PERSONAL = "personal"  # created on /portal/security, named, revocable there
    LOGIN = "login"  # handed out by POST /api/portal/login for a short while


class ApiToken(PublicIdMixin, CompanyOwned, Base):
    __tablename__ = "api_tokens"
    public_id_prefix = "tok"
    __table_args__ = (Index("ix_api_tokens_user", "user_id", "revoked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("portal_users.id", ondelete="CASCADE"))
    kind: Mapped[TokenKind] = mapped_column(str_enum(TokenKind, "token_kind"))
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[TokenScope] = mapped_column(str_enum(TokenScope, "token_scope"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the token
    prefix: Mapped[str] = mapped_column(String(16))  # the token's first characters, to tell it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_ip: Mapped[str] = mapped_column(String(64), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[PortalUser] = relationship()


class ArKey(Base):
    """An operator key of the receivables system. Global: it acts for every company."""

    __tablename__ = "ar_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the key
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ArEvent(CompanyOwned, Base):
    """One thing the receivables system should learn of, in the change's own transaction.

    `txid` (PostgreSQL: the writing transaction's id, a server default) lets the feed hand out
    only events whose transactions every reader can see, in commit-safe order; on SQLite writers
    are serialized, so the id order is the commit order. Webhook delivery is tracked here too.
    """

    __tablename__ = "ar_events"
    __table_args__ = (Index("ix_ar_events_txid_id", "txid", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))  # e.g. "payment.succeeded"
    subject_id: Mapped[str] = mapped_column(String(40))  # the public id it is about
    data: Mapped[str] = mapped_column(Text)  # JSON object
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    txid: Mapped[int | None] = mapped_column(BigInteger, server_default=FetchedValue())
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    webhook_last_error: Mapped[str] = mapped_column(String(300), default="")
