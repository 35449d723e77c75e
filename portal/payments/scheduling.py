"""Scheduled payments: queued for their day (06:00 UTC) after the commit, charged then."""

from __future__ import annotations

from datetime import UTC, datetime, time

from sqlalchemy.orm import Session

from portal import clock, flags, tenancy
from portal.db import commit_now
from portal.gateways import ChargeResult, ChargeStatus
from portal.models import Payment, PaymentStatus
from portal.payments.charging import METHOD_OF_OTHER_GATEWAY, apply, charge_now, elsewhere
from portal.payments.mail import notify_canceled
from portal.runtime import RUN_SCHEDULED_PAYMENT, Runtime
from portal.services import outbox, payments

RUN_AT = time(6, 0)
# What a scheduled payment's run answers while online payment (or the whole portal) is off: it
# stays scheduled, and the sweep (every 30 s) charges it once the flag is on again.
WAITING = "waiting: online payment is switched off"


def schedule(runtime: Runtime, session: Session, payment: Payment) -> None:
    """Put a scheduled payment's run on the queue for its day, after the commit."""
    assert payment.scheduled_for is not None
    when = datetime.combine(payment.scheduled_for, RUN_AT, tzinfo=UTC)
    runtime.enqueue_at(
        session, when, RUN_SCHEDULED_PAYMENT, payment.id, subject=outbox.about_payment(payment.id)
    )


def run_scheduled(runtime: Runtime, session: Session, payment_id: int) -> str:
    """Charge a scheduled payment on (or after) its day; a canceled or early one is left.

    One made with another gateway than the configured one (its method's token means nothing
    to this gateway) fails on its day with METHOD_OF_OTHER_GATEWAY, and its payer is mailed
    the outcome, so they can pay with a method of this gateway: left scheduled, it would
    silently never be paid, and its invoices would stay held.

    While `m25_portal_payment` (or `m25_portal`) is off it waits, changing nothing: not failed,
    not canceled; the sweep runs it when the flag is back on."""
    if not flags.enabled(flags.PAYMENT):
        return WAITING
    with tenancy.system(session):
        payment = session.get(Payment, payment_id)
        if payment is None or payment.status is not PaymentStatus.SCHEDULED:
            return "not scheduled"
        due = payment.scheduled_for is not None and payment.scheduled_for <= clock.today()
        if due and elsewhere(runtime, payment) is not None:
            failed = ChargeResult(ChargeStatus.FAILED, None, failure_code=METHOD_OF_OTHER_GATEWAY)
            apply(runtime, session, payment, failed)  # the job's edge commits, then mails
            return payment.status.value
        started = payments.start_scheduled(session, payment, today=clock.today(), now=clock.now())
        status: PaymentStatus = payment.status  # start_scheduled may have canceled it
        if status is PaymentStatus.CANCELED:
            notify_canceled(runtime, session, payment)
        commit_now(session, "the payment is processing (or canceled) before the gateway is asked")
        if not started:
            return payment.status.value
        charge_now(runtime, session, payment)
        return payment.status.value
