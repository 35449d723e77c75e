"""Gateway-side records. Global, not tenant-owned: they are keyed by gateway references.

`GatewayEvent` remembers which webhook events were applied, so a replay changes nothing. The
`Sandbox*` tables are the sandbox gateway's own store (what Stripe keeps on its side): they hold
tokens, brands and last four digits, never a card number or a security code.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, UTCDateTime, utcnow


class GatewayEvent(Base):
    __tablename__ = "gateway_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(60))
    reference: Mapped[str] = mapped_column(String(120), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SandboxSetup(Base):
    """One visit to the sandbox's hosted page for adding a method."""

    __tablename__ = "sandbox_setups"

    id: Mapped[str] = mapped_column(String(60), primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    return_url: Mapped[str] = mapped_column(String(500))
    cancel_url: Mapped[str] = mapped_column(String(500))
    token: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SandboxMethod(Base):
    __tablename__ = "sandbox_methods"

    token: Mapped[str] = mapped_column(String(120), primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    brand: Mapped[str] = mapped_column(String(40))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int | None] = mapped_column(Integer)
    exp_year: Mapped[int | None] = mapped_column(Integer)
    behaviour: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    detached_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SandboxCharge(Base):
    __tablename__ = "sandbox_charges"

    reference: Mapped[str] = mapped_column(String(60), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    token: Mapped[str] = mapped_column(String(120))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20))
    failure_code: Mapped[str | None] = mapped_column(String(60))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    settles_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
