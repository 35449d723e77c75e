"""Glue between the payment domain, the configured gateway, the job queue and mail.

Routes and jobs call these; `services.payments` stays free of Flask. Each function leaves the
commit to its caller except where a gateway call sits between two commits (a payment row must
be committed before the gateway hears of it, so a crash in between leaves a row to reconcile).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import g, render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from portal import clock, tenancy
from portal.blueprints.payments import copy
from portal.db import retry_on_sqlite_conflict
from portal.extensions import gateway, hand_off, jobs, mailer
from portal.gateways import (
    ChargeResult,
    ChargeStatus,
    GatewayConflict,
    GatewayError,
    InvalidSignature,
    PaymentGateway,
)
from portal.i18n import SUPPORTED_LOCALES
from portal.models import Company, Payment, PaymentStatus, PortalUser
from portal.services import payments
from portal.templating import money
from portal.web import public_link
from workers.queue import defer

log = logging.getLogger(__name__)


def return_url(payment: Payment) -> str:
    """Where the gateway sends the customer back after an authentication step."""
    return public_link(f"/portal/payments/{payment.public_id}/return")


def charge_now(session: Session, payment: Payment) -> ChargeResult | None:
    """Charge a committed processing payment, apply the answer and commit it."""

    def attempt() -> ChargeResult | None:
        result, changed = payments.charge(
            session, gateway(session), payment, return_url=return_url(payment), now=clock.now()
        )
        if changed:
            _after(session, payment)
        session.commit()
        return result

    result = retry_on_sqlite_conflict(session, attempt)
    if result is None:
        log.warning("gateway unreachable for payment %s; reconciliation will ask", payment.id)
    return result


def charge_each(session: Session, made: list[Payment]) -> str | None:
    """Charge committed processing payments one after another, each on its own: one that is
    declined, or cannot be charged at all, does not stop the next (reconciliation asks again
    about one left processing, with the same key). Returns where the customer confirms the
    first charge their bank wants to authenticate, if any."""
    action_url = None
    for payment in made:
        try:
            result = charge_now(session, payment)
        except Exception:
            session.rollback()
            log.exception("charging payment %s failed; reconciliation will ask", payment.id)
            continue
        if (
            action_url is None
            and result is not None
            and result.status is ChargeStatus.REQUIRES_ACTION
            and result.action_url
        ):
            action_url = result.action_url
    return action_url


def apply(session: Session, payment: Payment, result: ChargeResult) -> bool:
    changed = payments.apply_result(session, payment, result, now=clock.now())
    if changed:
        _after(session, payment)
    return changed


def _after(session: Session, payment: Payment) -> None:
    """A payment that reached its end tells its payer, once, after the commit."""
    if payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED):
        from workers import jobs as job_functions

        hand_off(session, job_functions.send_payment_result, payment.id)


def schedule(session: Session, payment: Payment) -> None:
    """Put a scheduled payment's run on the queue for its day (06:00 UTC), after the commit."""
    assert payment.scheduled_for is not None
    from datetime import UTC, datetime, time

    from workers import jobs as job_functions

    when = datetime.combine(payment.scheduled_for, time(6, 0), tzinfo=UTC)
    queue = jobs()
    payment_id = payment.id
    defer(
        session,
        lambda: queue.enqueue_at(
            when, job_functions.run_scheduled_payment, payment_id, job_id=f"scheduled-{payment_id}"
        ),
    )


def receive_webhook(
    session: Session, gw: PaymentGateway, body: bytes, headers: Mapping[str, str]
) -> payments.WebhookOutcome:
    """Verify, de-duplicate and apply one webhook. Raises InvalidSignature. Caller commits."""
    event = gw.parse_event(body, headers)
    if event is None:
        return payments.WebhookOutcome.IGNORED
    with tenancy.system(session):  # a webhook names a payment, not a signed-in company
        payment = payments.payment_by_reference(session, event.reference)
        if payment is None and event.payment_ref:
            # The charge's own answer never arrived, so the payment has no reference yet. Only
            # then, and only for the very amount: a charge can never take over another's payment.
            candidate = payments.payment_by_public_id(session, event.payment_ref, gw.name)
            if (
                candidate is not None
                and candidate.gateway_reference is None
                and (event.amount, event.currency) == (candidate.amount, candidate.currency)
            ):
                payment = candidate
            elif candidate is not None:
                log.warning(
                    "event %s names payment %s but does not match it",
                    event.event_id,
                    candidate.public_id,
                )
        if payment is None:
            # Not remembered: should the payment appear (a slow commit), a redelivery applies.
            return payments.WebhookOutcome.IGNORED
        if not payments.record_event(session, gw.name, event, clock.now()):
            return payments.WebhookOutcome.DUPLICATE
        changed = apply(session, payment, event.result)
    return payments.WebhookOutcome.APPLIED if changed else payments.WebhookOutcome.UNCHANGED


def run_scheduled(session: Session, payment_id: int) -> str:
    """Charge a scheduled payment on (or after) its day; a canceled or early one is left."""
    with tenancy.system(session):
        payment = session.get(Payment, payment_id)
        if payment is None or payment.status is not PaymentStatus.SCHEDULED:
            return "not scheduled"
        started = payments.start_scheduled(session, payment, today=clock.today(), now=clock.now())
        status: PaymentStatus = payment.status  # start_scheduled may have canceled it
        if status is PaymentStatus.CANCELED:
            _after_cancel(session, payment)
        session.commit()
        if not started:
            return payment.status.value
        charge_now(session, payment)
        return payment.status.value


def _after_cancel(session: Session, payment: Payment) -> None:
    from workers import jobs as job_functions

    hand_off(session, job_functions.send_payment_result, payment.id)


def reconcile(session: Session, payment_id: int) -> str:
    """Ask the gateway about a payment still processing; the same key finds the same charge.

    A payment waiting for the customer's 3-D Secure past ACTION_TIMEOUT is cancelled at the
    gateway and fails, which frees its invoices. A payment with no reference after a day is
    left for a person: gateways forget idempotency keys after 24 hours, so asking again then
    could charge twice.
    """
    with tenancy.system(session):
        payment = session.get(Payment, payment_id)
        if payment is None or payment.status is not PaymentStatus.PROCESSING:
            return "not processing"
        gw = gateway(session)
        now = clock.now()
        try:
            if payment.gateway_reference:
                result = gw.retrieve(payment.gateway_reference)
                if result.status is ChargeStatus.REQUIRES_ACTION:
                    if now - payments.charging_since(payment) < payments.ACTION_TIMEOUT:
                        return "waiting for the customer"
                    gw.cancel(payment.gateway_reference)
                    result = ChargeResult(
                        ChargeStatus.FAILED,
                        payment.gateway_reference,
                        failure_code="authentication_required",
                    )
                apply(session, payment, result)
            elif now - payments.charging_since(payment) > payments.KEY_LIFETIME:
                log.error(
                    "payment %s has no gateway reference after a day: check it by hand",
                    payment.public_id,
                )
                return "needs review"
            else:
                _result, changed = payments.charge(
                    session, gw, payment, return_url=return_url(payment), now=now
                )
                if changed:
                    _after(session, payment)
        except GatewayConflict:
            log.error(
                "gateway refuses payment %s's key with these parameters: check it by hand",
                payment.public_id,
            )
            return "needs review"
        except GatewayError:
            log.warning("gateway still unreachable for payment %s", payment.id)
        session.commit()
        return payment.status.value


def mail_result(session: Session, payment_id: int) -> str:
    """E-mail the payer the outcome (with the receipt when it succeeded)."""
    with tenancy.system(session):
        payment = payments.get_payment_by_id(session, payment_id)
        if payment is None or payment.user_id is None:
            return "no payer"
        user = session.get(PortalUser, payment.user_id)
        company = session.get(Company, payment.company_id)
        if user is None or company is None:
            return "no payer"
        g.user = user  # formats money and dates as this user reads them
        language = (user.locale or company.locale or "en").split("_")[0]
        with force_locale(language if language in SUPPORTED_LOCALES else "en"):
            amount = money(payment.amount, payment.currency)
            if payment.status is PaymentStatus.SUCCEEDED:
                subject = _(
                    "Receipt %(number)s: payment of %(amount)s",
                    number=payment.reference,
                    amount=amount,
                )
                template = "mail/payment_succeeded.txt"
            elif payment.status is PaymentStatus.FAILED:
                subject = _("Payment failed: %(amount)s", amount=amount)
                template = "mail/payment_failed.txt"
            else:
                subject = _("Scheduled payment canceled: %(amount)s", amount=amount)
                template = "mail/payment_canceled.txt"
            text = render_template(
                template,
                payment=payment,
                user=user,
                company=company,
                amount=amount,
                reason=copy.failure_reason(payment.failure_code),
                link=_link(payment),
            )
        mailer().send(user.email, subject, text)
        return "sent"


def _link(payment: Payment) -> str:
    return public_link(f"/portal/payments/{payment.public_id}")


__all__ = [
    "InvalidSignature",
    "apply",
    "charge_each",
    "charge_now",
    "mail_result",
    "receive_webhook",
    "reconcile",
    "run_scheduled",
    "schedule",
]
