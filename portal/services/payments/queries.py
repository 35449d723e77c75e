"""Reading payments: one with its details, a group's, the ones the sweeps look for."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session, joinedload, selectinload

from portal.models import (
    Payment,
    PaymentAllocation,
    PaymentGroup,
    PaymentMethod,
    PaymentStatus,
)
from portal.services.payments.rules import ACTION_TIMEOUT, KEY_LIFETIME, REVIEW_WINDOW


def group_payments(session: Session, group: PaymentGroup) -> list[Payment]:
    """The group's payments that the scope may see (a restricted user: their accounts only)."""
    return list(session.scalars(_with_details(Payment.group_id == group.id).order_by(Payment.id)))


def get_group(session: Session, public_id: str) -> PaymentGroup | None:
    return session.scalar(select(PaymentGroup).where(PaymentGroup.public_id == public_id))


@dataclass(frozen=True)
class Found:
    """Payments a sweep found, by gateway: `ours` were made with the configured gateway (and
    with one of its methods); `elsewhere` maps each other gateway to its payments' ids."""

    ours: list[int] = field(default_factory=list)
    elsewhere: dict[str, list[int]] = field(default_factory=dict)


def _by_gateway(condition: Any) -> Select[int, str, str]:
    """Ids of the payments meeting `condition`, with their gateway and their method's."""
    return (
        select(Payment.id, Payment.gateway, PaymentMethod.gateway)
        .outerjoin(PaymentMethod, PaymentMethod.id == Payment.payment_method_id)
        .where(condition)
        .order_by(Payment.id)
    )


def _split(rows: Iterable[tuple[int, str, str | None]], gateway_name: str) -> Found:
    found = Found()
    for payment_id, gateway, method_gateway in rows:
        other = other_gateway(gateway, method_gateway, gateway_name)
        if other is None:
            found.ours.append(payment_id)
        else:
            found.elsewhere.setdefault(other, []).append(payment_id)
    return found


def other_gateway(gateway: str, method_gateway: str | None, gateway_name: str) -> str | None:
    """The other gateway a payment belongs to (its own, else its method's), or None when it and
    its method are the configured gateway's."""
    if gateway != gateway_name:
        return gateway
    if method_gateway is not None and method_gateway != gateway_name:
        return method_gateway
    return None


def due_scheduled(session: Session, today: date, gateway_name: str) -> Found:
    """Scheduled payments whose day has come, split by gateway."""
    due = and_(Payment.status == PaymentStatus.SCHEDULED, Payment.scheduled_for <= today)
    return _split(session.execute(_by_gateway(due)), gateway_name)


def charging_since(payment: Payment) -> datetime:
    return payment.charging_since or payment.created_at


def stuck_processing(session: Session, before: datetime, gateway_name: str) -> Found:
    """Processing since before `before`, or waiting for 3-D Secure for longer than allowed,
    split by gateway (only the configured gateway can be asked about its own charges).

    A payment with no gateway reference drops out once its key may be forgotten by the
    gateway (reconcile has reported it by then): asking again could charge twice.
    """
    since = func.coalesce(Payment.charging_since, Payment.created_at)
    stuck = and_(
        Payment.status == PaymentStatus.PROCESSING,
        or_(
            and_(Payment.action_url.is_(None), since < before),
            since < before - ACTION_TIMEOUT,
        ),
        or_(
            Payment.gateway_reference.is_not(None),
            since > before - KEY_LIFETIME - REVIEW_WINDOW,
        ),
    )
    return _split(session.execute(_by_gateway(stuck)), gateway_name)


def _with_details(condition: Any) -> Select[Payment]:
    """Payments with their account and group (joined), allocations, their invoices and method
    (three queries)."""
    return (
        select(Payment)
        .where(condition)
        .options(
            joinedload(Payment.billing_account),
            joinedload(Payment.group),
            selectinload(Payment.allocations).selectinload(PaymentAllocation.invoice),
            selectinload(Payment.payment_method),
        )
    )


def get_payment(session: Session, public_id: str) -> Payment | None:
    return session.scalar(_with_details(Payment.public_id == public_id))


def payment_by_public_id(session: Session, public_id: str, gateway_name: str) -> Payment | None:
    return session.scalar(
        _with_details(Payment.public_id == public_id).where(Payment.gateway == gateway_name)
    )


def payment_by_reference(session: Session, reference: str) -> Payment | None:
    return session.scalar(_with_details(Payment.gateway_reference == reference))


def get_payment_by_id(session: Session, payment_id: int) -> Payment | None:
    return session.scalar(_with_details(Payment.id == payment_id))
