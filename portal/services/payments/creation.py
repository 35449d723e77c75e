"""Recording payments: one per billing account (in a group when there are several), the
amounts reserved under the invoices' lock, once per form key."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.models import (
    Company,
    Payment,
    PaymentAllocation,
    PaymentGroup,
    PaymentMethod,
    PaymentStatus,
    PortalUser,
)
from portal.models.payment import new_reference
from portal.services import audit
from portal.services.payments.queries import group_payments
from portal.services.payments.rules import KEY_FORMAT, REFERENCE_ATTEMPTS, FieldError
from portal.services.payments.selection import (
    Selection,
    Share,
    check_amounts,
    chosen_ids,
    invoices_query,
    judge,
)
from portal.services.payments.transitions import mark_processing


def new_idempotency_key() -> str:
    return secrets.token_urlsafe(24)


def valid_key(key: str | None) -> bool:
    return bool(key and KEY_FORMAT.match(key))


def _owned_key(user: PortalUser, key: str) -> str:
    """Keys are stored per user, so one user's key can never name another's payment."""
    return f"{user.public_id}:{key}"


# recording ------------------------------------------------------------------------------


@dataclass
class Submission:
    payments: list[Payment] = field(default_factory=list)  # one per billing account
    group: PaymentGroup | None = None  # when there are several
    selection: Selection | None = None  # set when the selection itself was refused
    errors: dict[str, FieldError] = field(default_factory=dict)
    replayed: bool = False  # the key had already made these payments

    @property
    def made(self) -> Payment | PaymentGroup | None:
        """What the customer is shown next: the group, else the one payment."""
        return self.group or (self.payments[0] if self.payments else None)


def find_by_key(session: Session, user: PortalUser, key: str) -> Payment | PaymentGroup | None:
    """What this user's form key already made: one payment, or a group of several."""
    owned = _owned_key(user, key)
    group = session.scalar(select(PaymentGroup).where(PaymentGroup.idempotency_key == owned))
    if group is not None:
        return group
    return session.scalar(select(Payment).where(Payment.idempotency_key == owned))


def _replay(session: Session, made: Payment | PaymentGroup) -> Submission:
    if isinstance(made, Payment):
        return Submission(payments=[made], replayed=True)
    return Submission(payments=group_payments(session, made), group=made, replayed=True)


def lock_selection(
    session: Session, user: PortalUser, key: str, public_ids: Sequence[str]
) -> Selection | Payment | PaymentGroup:
    """The confirm step's read, under the invoices' lock (kept until the transaction ends):
    what this user's form key already made, if anything, else the invoices to pay with what
    is available on each. One statement reads the locked invoices, their accounts and the
    key's payment or group; the amounts other payments hold are read after the lock."""
    ids, problem = chosen_ids(public_ids)
    if problem is not None:
        return find_by_key(session, user, key) or Selection(problem=problem)
    owned = _owned_key(user, key)
    made_payment = select(Payment.id).where(Payment.idempotency_key == owned).scalar_subquery()
    made_group = (
        select(PaymentGroup.id).where(PaymentGroup.idempotency_key == owned).scalar_subquery()
    )
    query = invoices_query(session, ids, lock=True).add_columns(made_payment, made_group)
    rows = session.execute(query).all()
    if rows and rows[0][2] is not None:
        return session.get_one(PaymentGroup, rows[0][2])
    if rows and rows[0][1] is not None:
        return session.get_one(Payment, rows[0][1])
    selection = judge(session, ids, [row[0] for row in rows])
    if selection.problem is not None:
        # The lock may have waited for payments that were just made with this very key.
        return find_by_key(session, user, key) or selection
    return selection


def record_payments(
    session: Session,
    selection: Selection,
    *,
    user: PortalUser,
    company: Company,
    key: str,
    method: PaymentMethod,
    scheduled_for: date | None,
    gateway_name: str,
    now: datetime,
    request: audit.RequestInfo,
) -> Submission:
    """Record the amounts set on a selection read by `lock_selection` (in this transaction,
    so its invoices are still locked): one payment per billing account, in a group when there
    are several, not yet charged. All or nothing, in the caller's transaction."""
    errors = check_amounts(selection, company)
    if errors:
        return Submission(selection=selection, errors=errors)
    shares = selection.shares(paying_only=True)
    owned = _owned_key(user, key)
    group = None
    if len(shares) > 1:
        group = PaymentGroup(
            company_id=company.id, idempotency_key=owned, user_id=user.id, created_at=now
        )
    made = [
        Payment(
            company_id=company.id,
            billing_account_id=share.account.id,
            # A group's payments: the group's key and the share's place, the same on a retry.
            idempotency_key=f"{owned}.{number}" if group else owned,
            group=group,
            user_id=user.id,
            payment_method_id=method.id,
            currency=selection.currency,
            amount=share.total,
            status=PaymentStatus.SCHEDULED if scheduled_for else PaymentStatus.PROCESSING,
            scheduled_for=scheduled_for,
            charging_since=None if scheduled_for else now,
            gateway=gateway_name,
            created_at=now,
            allocations=_allocations(company, share),
        )
        for number, share in enumerate(shares, start=1)
    ]
    twin = _insert(session, user, key, [group, *made] if group else made, made)
    if twin is not None:  # a twin of this submit got there first
        return _replay(session, twin)
    if scheduled_for is None:
        mark_processing(session, [item.invoice for item in selection.items if item.amount > 0])
    for payment in made:
        _audit_made(session, user, payment, method, scheduled_for, request)
    return Submission(payments=made, group=group, selection=selection)


def _allocations(company: Company, share: Share) -> list[PaymentAllocation]:
    return [
        PaymentAllocation(
            company_id=company.id,
            billing_account_id=share.account.id,
            invoice_id=item.invoice.id,
            amount=item.amount,
        )
        for item in share.items
    ]


def _insert(
    session: Session, user: PortalUser, key: str, rows: Sequence[object], made: list[Payment]
) -> Payment | PaymentGroup | None:
    """Add the rows; what a twin of this submit made instead, if it got there first."""
    for attempt in range(REFERENCE_ATTEMPTS):
        try:
            with session.begin_nested():
                session.add_all(rows)
            return None
        except IntegrityError:
            existing = find_by_key(session, user, key)
            if existing is not None:
                return existing
            if attempt == REFERENCE_ATTEMPTS - 1:
                raise
            for payment in made:  # nothing else is unique: a reference was taken, draw again
                payment.reference = new_reference()
    return None


def _audit_made(
    session: Session,
    user: PortalUser,
    payment: Payment,
    method: PaymentMethod,
    scheduled_for: date | None,
    request: audit.RequestInfo,
) -> None:
    audit.record_for(
        session,
        user,
        "Portal.PaymentScheduled" if scheduled_for else "Portal.PaymentSubmitted",
        request=request,
        payment_id=payment.public_id,
        reference=payment.reference,
        group_id=payment.group.public_id if payment.group else None,
        invoice_ids=[a.invoice.public_id for a in payment.allocations],
        amount=payment.amount,
        currency=payment.currency,
        payment_method=method.kind.value,
        scheduled_for=scheduled_for.isoformat() if scheduled_for else None,
    )
