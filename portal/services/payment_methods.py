"""Saved payment methods: gateway tokens with what may be shown (brand, last four, expiry)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal import tenancy
from portal.gateways import SavedMethod
from portal.models import Payment, PaymentMethod, PaymentStatus, PortalUser, Role
from portal.services import audit, autopay


class Refusal(enum.StrEnum):
    IN_USE = "in_use"
    NOT_YOURS = "not_yours"
    ALREADY_REMOVED = "already_removed"


def usable(session: Session, gateway_name: str) -> list[PaymentMethod]:
    """The company's methods not removed, saved with `gateway_name` (the configured gateway:
    another's tokens mean nothing to it): default first, then newest."""
    return list(
        session.scalars(
            select(PaymentMethod)
            .where(PaymentMethod.removed_at.is_(None), PaymentMethod.gateway == gateway_name)
            .order_by(PaymentMethod.is_default.desc(), PaymentMethod.created_at.desc())
        )
    )


def preferred(
    methods: Sequence[PaymentMethod], wanted: str | None, today: date
) -> PaymentMethod | None:
    """The method to preselect: the one asked for, else the default, else any unexpired one."""
    live = [m for m in methods if not m.is_expired(today)]
    for method in live:
        if wanted and method.public_id == wanted:
            return method
    return next((m for m in live if m.is_default), live[0] if live else None)


def get(session: Session, public_id: str, gateway_name: str) -> PaymentMethod | None:
    """One of `usable`'s methods: another gateway's looks like a missing one."""
    return session.scalar(
        select(PaymentMethod).where(
            PaymentMethod.public_id == public_id,
            PaymentMethod.removed_at.is_(None),
            PaymentMethod.gateway == gateway_name,
        )
    )


def may_manage(user: PortalUser, method: PaymentMethod) -> bool:
    """Admins manage every company method; others the ones they added."""
    return user.role is Role.ADMIN or method.created_by_user_id == user.id


def add(
    session: Session,
    user: PortalUser,
    saved: SavedMethod,
    *,
    gateway_name: str,
    now: datetime,
    request: audit.RequestInfo,
) -> PaymentMethod:
    """Store what a completed hosted page produced (once: a reload finds the same row)."""
    existing = session.scalar(
        select(PaymentMethod).where(PaymentMethod.gateway_token == saved.token)
    )
    if existing is not None:
        return existing
    first = not any(m.is_default for m in usable(session, gateway_name))
    if first:  # another gateway's default (one per company) is no default for this one
        _clear_default(session)
    method = PaymentMethod(
        company_id=user.company_id,
        created_by_user_id=user.id,
        gateway=gateway_name,
        gateway_token=saved.token,
        kind=saved.kind,
        brand=saved.brand,
        last4=saved.last4,
        exp_month=saved.exp_month,
        exp_year=saved.exp_year,
        is_default=first,
        created_at=now,
    )
    session.add(method)
    session.flush()
    audit.record_for(
        session,
        user,
        "Portal.PaymentMethodAdded",
        request=request,
        method_id=method.public_id,
        payment_method=saved.kind.value,
        brand=saved.brand,
    )
    return method


def scheduled_using(session: Session, method: PaymentMethod) -> Payment | None:
    """A payment still to be charged with this method, in any account of the company (the
    method is the company's: a user who sees one account must not strand another's)."""
    with tenancy.widened(session):
        return session.scalar(
            select(Payment)
            .where(
                Payment.payment_method_id == method.id,
                Payment.status.in_((PaymentStatus.SCHEDULED, PaymentStatus.PROCESSING)),
            )
            .order_by(Payment.scheduled_for.is_(None), Payment.scheduled_for)
            .limit(1)
        )


def remove(
    session: Session,
    user: PortalUser,
    method: PaymentMethod,
    *,
    now: datetime,
    request: audit.RequestInfo,
    gateway_name: str,
) -> Refusal | Payment | None:
    """Soft-remove (payments keep pointing at it). Returns why not, or the payment in the way.
    The next of `gateway_name`'s methods becomes the default if this one was."""
    if not may_manage(user, method):
        return Refusal.NOT_YOURS
    if method.removed_at is not None:
        return Refusal.ALREADY_REMOVED
    blocking = scheduled_using(session, method)
    if blocking is not None:
        return blocking
    was_default = method.is_default
    method.removed_at = now
    method.is_default = False
    session.flush()
    autopay.method_removed(session, method, now=now)
    if was_default:
        successor = next(iter(usable(session, gateway_name)), None)
        if successor is not None:
            successor.is_default = True
    audit.record_for(
        session,
        user,
        "Portal.PaymentMethodRemoved",
        request=request,
        method_id=method.public_id,
        payment_method=method.kind.value,
    )
    session.flush()
    return None


def set_default(
    session: Session, user: PortalUser, method: PaymentMethod, *, request: audit.RequestInfo
) -> Refusal | None:
    if not may_manage(user, method):
        return Refusal.NOT_YOURS
    _clear_default(session, but=method)
    method.is_default = True
    session.flush()
    audit.record_for(
        session, user, "Portal.PaymentMethodDefault", request=request, method_id=method.public_id
    )
    return None


def _clear_default(session: Session, *, but: PaymentMethod | None = None) -> None:
    """No method of the company is its default any more (but `but`). Before setting one: the
    partial unique index allows one default per company at any moment, whatever its gateway."""
    query = update(PaymentMethod).where(PaymentMethod.is_default.is_(True))
    if but is not None:
        query = query.where(PaymentMethod.id != but.id)
    session.execute(query.values(is_default=False).execution_options(synchronize_session="fetch"))
