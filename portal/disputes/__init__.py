"""Disputes as conversations, with the runtime: the file store for attachments, the outbox
for the receivables team's mail, and the customer side's notifications.

Both sides hear of what the other did. The receivables team (DISPUTES_EMAIL) gets a mail for
each new dispute, each customer message and each withdrawal (`mail.py`, a job handed off in the
same transaction). The customer side (the company's admins, and the opener while they can still
see the invoice's billing account) is notified of a staff reply and of an outcome. Opening a
dispute cancels the invoice's scheduled payments that have not started, and their payers are
mailed why (the payment result mail, `portal.payments.mail`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import (
    Dispute,
    DisputeReason,
    Invoice,
    NotificationTopic,
    PortalUser,
    Role,
    UserAccountGrant,
    UserStatus,
)
from portal.notifications import notify
from portal.payments import mail as payment_mail
from portal.runtime import SEND_DISPUTE_MAIL, Runtime
from portal.services import audit
from portal.services import disputes as service
from portal.services.disputes import DisputeResult, Outcome, Upload


def _mail_receivables(
    runtime: Runtime, session: Session, dispute: Dispute, event: str, message_id: int | None
) -> None:
    runtime.hand_off(
        session, SEND_DISPUTE_MAIL, dispute.id, event, message_id, subject=f"dispute:{dispute.id}"
    )


def recipients(session: Session, dispute: Dispute) -> list[PortalUser]:
    """Who hears of a dispute on the customer side: the company's admins, and whoever opened
    it while they can still see the invoice's billing account (an admin, or granted it);
    active users only, each once."""
    granted = exists().where(
        UserAccountGrant.user_id == PortalUser.id,
        UserAccountGrant.billing_account_id == dispute.billing_account_id,
    )
    with tenancy.system(session):
        users = list(
            session.scalars(
                select(PortalUser)
                .where(
                    PortalUser.company_id == dispute.company_id,
                    PortalUser.status == UserStatus.ACTIVE,
                    (PortalUser.role == Role.ADMIN)
                    | ((PortalUser.id == dispute.opened_by_user_id) & granted),
                )
                .order_by(PortalUser.id)
            )
        )
    return users


def _notify_customers(
    runtime: Runtime, session: Session, dispute: Dispute, event: str, key: str, reason: str = ""
) -> int:
    """Tell the customer side (see `recipients`) through `portal.notifications.notify`, once
    per user and `key` (a job or a command run twice notifies once). Returns how many were
    told this time."""
    invoice = session.get(Invoice, dispute.invoice_id)
    if invoice is None:
        return 0
    params: dict[str, str | int] = {"invoice": invoice.number, "event": event}
    if reason.strip():
        params["reason"] = reason.strip()[:300]
    # A path (the centre links it, the mail puts PUBLIC_URL before it), built without a request.
    link = runtime.links.url_map.bind("localhost").build(
        "disputes.show", {"public_id": dispute.public_id}
    )
    told = 0
    for user in recipients(session, dispute):
        with tenancy.system(session):
            sent = notify(
                runtime,
                session,
                user,
                NotificationTopic.DISPUTE_UPDATED,
                key=key,
                params=params,
                link=link,
            )
        told += sent is not None
    return told


def open_dispute(
    runtime: Runtime,
    session: Session,
    invoice: Invoice,
    user: PortalUser,
    *,
    reason: DisputeReason,
    amount: int | None,
    message: str,
    now: datetime,
    request: audit.RequestInfo,
) -> DisputeResult:
    """The customer disputes an invoice: recorded, the receivables team's mail handed off (in
    the same transaction, so once), and the payers of the scheduled payments it canceled told."""
    result = service.open_dispute(
        session,
        invoice,
        user,
        reason=reason,
        amount=amount,
        message=message,
        now=now,
        request=request,
    )
    if result.dispute is None:
        return result
    first = result.dispute.messages[0]
    _mail_receivables(runtime, session, result.dispute, "opened", first.id)
    for payment in result.canceled:
        payment_mail.notify_canceled(runtime, session, payment)
    return result


def customer_message(
    runtime: Runtime,
    session: Session,
    dispute: Dispute,
    user: PortalUser,
    *,
    body: str,
    uploads: Sequence[Upload],
    now: datetime,
    request: audit.RequestInfo,
) -> Outcome:
    outcome = service.post_message(
        session, runtime.store, dispute, user, body=body, uploads=uploads, now=now, request=request
    )
    if outcome.message is not None:
        _mail_receivables(runtime, session, dispute, "message", outcome.message.id)
    return outcome


def customer_withdraw(
    runtime: Runtime,
    session: Session,
    dispute: Dispute,
    user: PortalUser,
    *,
    now: datetime,
    request: audit.RequestInfo,
) -> Outcome:
    outcome = service.withdraw(session, dispute, user, now=now, request=request)
    if outcome.dispute is not None:
        _mail_receivables(runtime, session, dispute, "withdrawn", None)
    return outcome


def staff_reply(
    runtime: Runtime,
    session: Session,
    dispute: Dispute,
    *,
    body: str,
    uploads: Sequence[Upload],
    now: datetime,
) -> Outcome:
    outcome = service.staff_reply(
        session, runtime.store, dispute, body=body, uploads=uploads, now=now
    )
    if outcome.message is not None:
        _notify_customers(runtime, session, dispute, "reply", f"reply:{outcome.message.id}")
    return outcome


def resolve_with_credit(
    runtime: Runtime, session: Session, dispute: Dispute, *, amount: int, reason: str, now: datetime
) -> Outcome:
    outcome = service.resolve_with_credit(session, dispute, amount=amount, reason=reason, now=now)
    if outcome.dispute is not None:
        _notify_customers(
            runtime, session, dispute, "credit_issued", f"outcome:{dispute.public_id}", reason
        )
    return outcome


def reject(
    runtime: Runtime, session: Session, dispute: Dispute, *, reason: str, now: datetime
) -> Outcome:
    outcome = service.reject(session, dispute, reason=reason, now=now)
    if outcome.dispute is not None:
        _notify_customers(
            runtime, session, dispute, "rejected", f"outcome:{dispute.public_id}", reason
        )
    return outcome
