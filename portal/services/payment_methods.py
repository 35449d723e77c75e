"""Saved payment methods: gateway tokens with what may be shown (brand, last four, expiry)."""

from __future__ import annotations

import calendar
import enum
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from portal import tenancy
from portal.gateways import SavedMethod
from portal.models import (
    Payment,
    PaymentMethod,
    PaymentMethodKind,
    PaymentStatus,
    PortalUser,
    Role,
)
from portal.services import audit, autopay

# A card is "expiring" once the last day of its expiry month is this close (or past): the
# dashboard flags it, its page says "Expires soon", the job mails those who may manage it.
EXPIRY_NOTICE = timedelta(days=60)


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


def expires_on(method: PaymentMethod) -> date | None:
    """The last day a card can be charged (the end of its expiry month); None for a bank
    debit or a method without an expiry."""
    if method.kind is not PaymentMethodKind.CARD or not method.exp_year or not method.exp_month:
        return None
    if not (1 <= method.exp_month <= 12 and 1 <= method.exp_year <= 9999):
        return None
    last = calendar.monthrange(method.exp_year, method.exp_month)[1]
    return date(method.exp_year, method.exp_month, last)


def is_expiring(method: PaymentMethod, today: date) -> bool:
    """The one rule: a card whose expiry month ends within EXPIRY_NOTICE of `today`, or has
    ended already. Bank debits never."""
    end = expires_on(method)
    return end is not None and end - today <= EXPIRY_NOTICE


def _latest_expiring_month(today: date) -> int:
    """The last expiry month (as year * 12 + month) that `is_expiring` holds on `today`."""
    cutoff = today + EXPIRY_NOTICE
    index = cutoff.year * 12 + cutoff.month
    if cutoff.day != calendar.monthrange(cutoff.year, cutoff.month)[1]:
        index -= 1  # cutoff's own month ends after it
    return index


def expiring(
    session: Session, user: PortalUser, gateway_name: str, today: date
) -> list[PaymentMethod]:
    """`gateway_name`'s cards `user` may manage that are expiring or expired, soonest first:
    one query (the company's few methods, bounded in SQL by the same rule)."""
    query = select(PaymentMethod).where(
        PaymentMethod.removed_at.is_(None),
        PaymentMethod.gateway == gateway_name,
        PaymentMethod.kind == PaymentMethodKind.CARD,
        PaymentMethod.exp_year * 12 + PaymentMethod.exp_month <= _latest_expiring_month(today),
    )
    if user.role is not Role.ADMIN:
        query = query.where(PaymentMethod.created_by_user_id == user.id)
    found = session.scalars(
        query.order_by(PaymentMethod.exp_year, PaymentMethod.exp_month, PaymentMethod.id)
    )
    return [m for m in found if is_expiring(m, today) and may_manage(user, m)]


def by_token(session: Session, token: str) -> PaymentMethod | None:
    """The company's method saved with this gateway token (removed or not)."""
    return session.scalar(select(PaymentMethod).where(PaymentMethod.gateway_token == token))


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


def replace(
    session: Session,
    user: PortalUser,
    old: PaymentMethod,
    new: PaymentMethod,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> Refusal | int:
    """`new` takes `old`'s place in one step: every SCHEDULED payment of the company on `old`
    moves to `new`, so do the autopay settings on it (`autopay_moved` in the audit record), the
    default flag is carried, `old` is soft-removed and `Portal.PaymentMethodReplaced` recorded.
    Returns how many payments moved, or why not. A PROCESSING payment stays on `old` (it is
    already being charged with it). Never commits; the caller detaches `old` at the gateway
    after the commit."""
    if not may_manage(user, old):
        return Refusal.NOT_YOURS
    if old.removed_at is not None or new.removed_at is not None or old.id == new.id:
        return Refusal.ALREADY_REMOVED
    with tenancy.widened(session):  # the method is the company's: every account's payments
        result = session.execute(
            update(Payment)
            .where(
                Payment.payment_method_id == old.id,
                Payment.status == PaymentStatus.SCHEDULED,
            )
            .values(payment_method_id=new.id)
            .execution_options(synchronize_session="fetch")
        )
        moved = int(cast(CursorResult[Any], result).rowcount or 0)
    autopay_moved = autopay.replace_method(session, old, new, user, now=now)  # they follow
    was_default = old.is_default
    old.removed_at = now
    old.is_default = False
    session.flush()
    if was_default:
        _clear_default(session, but=new)
        new.is_default = True
    audit.record_for(
        session,
        user,
        "Portal.PaymentMethodReplaced",
        request=request,
        old_method_id=old.public_id,
        new_method_id=new.public_id,
        payments_moved=moved,
        autopay_moved=autopay_moved,
    )
    session.flush()
    return moved


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
