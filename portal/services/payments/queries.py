"""Reading payments: one with its details, a group's, the ones the sweeps look for."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session, joinedload, selectinload

from portal.models import (
    Payment,
    PaymentAllocation,
    PaymentGroup,
    PaymentStatus,
)
from portal.services.payments.rules import ACTION_TIMEOUT, KEY_LIFETIME, REVIEW_WINDOW


def group_payments(session: Session, group: PaymentGroup) -> list[Payment]:
    """The group's payments that the scope may see (a restricted user: their accounts only)."""
    return list(session.scalars(_with_details(Payment.group_id == group.id).order_by(Payment.id)))


def get_group(session: Session, public_id: str) -> PaymentGroup | None:
    return session.scalar(select(PaymentGroup).where(PaymentGroup.public_id == public_id))


def due_scheduled(session: Session, today: date) -> list[int]:
    return list(
        session.scalars(
            select(Payment.id).where(
                Payment.status == PaymentStatus.SCHEDULED, Payment.scheduled_for <= today
            )
        )
    )


def charging_since(payment: Payment) -> datetime:
    return payment.charging_since or payment.created_at


def stuck_processing(session: Session, before: datetime) -> list[int]:
    """Processing since before `before`, or waiting for 3-D Secure for longer than allowed.

    A payment with no gateway reference drops out once its key may be forgotten by the
    gateway (reconcile has reported it by then): asking again could charge twice.
    """
    since = func.coalesce(Payment.charging_since, Payment.created_at)
    return list(
        session.scalars(
            select(Payment.id).where(
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
        )
    )


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
