"""Charging a payment and applying the gateway's answer; asking again about one left processing.

Money moves exactly once: the charge carries the payment's idempotency key, so asking again (a
retry, a reconciliation) finds the same charge, and every status move is conditional
(portal.services.payments.transitions).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from portal import clock, tenancy
from portal.db import commit_now, retry_on_conflict
from portal.gateways import (
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    GatewayConflict,
    GatewayError,
    PaymentGateway,
)
from portal.models import Company, Payment, PaymentStatus
from portal.payments.mail import notify
from portal.runtime import Runtime
from portal.services import payments

log = logging.getLogger(__name__)

# A due scheduled payment whose method was saved with another gateway than the configured one
# fails with this code (the customer reads "this payment method is no longer available").
METHOD_OF_OTHER_GATEWAY = "payment_method_unavailable"


def elsewhere(runtime: Runtime, payment: Payment) -> str | None:
    """The other gateway a payment (or its method) belongs to; None when it is the configured
    gateway's. Another gateway's charge is never asked about, nor its token charged, here."""
    method = payment.payment_method
    return payments.other_gateway(
        payment.gateway, method.gateway if method else None, runtime.gateway_name
    )


def charge(
    session: Session, gateway: PaymentGateway, payment: Payment, *, return_url: str, now: datetime
) -> tuple[ChargeResult | None, bool]:
    """Ask the gateway to charge a processing payment and apply its answer.

    Returns the answer and whether it changed the payment (a webhook may have been first).
    No answer means the gateway could not be reached: the payment stays processing and the
    reconciliation job asks again with the same idempotency key.
    """
    method = payment.payment_method
    company = session.get(Company, payment.company_id)
    assert method is not None and company is not None
    try:
        company.gateway_customer_id = gateway.ensure_customer(
            existing=company.gateway_customer_id,
            company_ref=company.public_id,
            company_name=company.name,
        )
    except GatewayError:
        return None, False
    request = ChargeRequest(
        customer=company.gateway_customer_id,
        token=method.gateway_token,
        amount=payment.amount,
        currency=payment.currency,
        idempotency_key=payment.idempotency_key,
        # Only what never changes: a retry must repeat every parameter exactly.
        description=f"Billing portal payment {payment.public_id}",
        return_url=return_url,
        metadata={"payment": payment.public_id},
        off_session=payment.scheduled_for is not None,  # run by a job: nobody to authenticate
    )
    try:
        result = gateway.charge(request)
    except GatewayConflict:
        raise  # the same key with other parameters: asking again will not help
    except GatewayError:
        return None, False
    return result, payments.apply_result(session, payment, result, now=now)


def _charge(
    runtime: Runtime, session: Session, gateway: PaymentGateway, payment: Payment, now: datetime
) -> ChargeResult | None:
    result, changed = charge(
        session,
        gateway,
        payment,
        return_url=runtime.links.payment_return(payment.public_id),
        now=now,
    )
    if changed:
        notify(runtime, session, payment)
    return result


def charge_now(runtime: Runtime, session: Session, payment: Payment) -> ChargeResult | None:
    """Charge a committed processing payment, apply the answer and commit it."""

    def attempt() -> ChargeResult | None:
        result = _charge(runtime, session, runtime.gateway(session), payment, clock.now())
        commit_now(session, "each charge's answer stands on its own, before the next call")
        return result

    result = retry_on_conflict(session, attempt)
    if result is None:
        log.warning("gateway unreachable for payment %s; reconciliation will ask", payment.id)
    return result


def charge_each(runtime: Runtime, session: Session, made: list[Payment]) -> str | None:
    """Charge committed processing payments one after another, each on its own: one that is
    declined, or cannot be charged at all, does not stop the next (reconciliation asks again
    about one left processing, with the same key). Returns where the customer confirms the
    first charge their bank wants to authenticate, if any."""
    action_url = None
    for payment in made:
        try:
            result = charge_now(runtime, session, payment)
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


def apply(runtime: Runtime, session: Session, payment: Payment, result: ChargeResult) -> bool:
    """Apply a gateway's answer about a payment; the payer hears of an end. Caller commits."""
    changed = payments.apply_result(session, payment, result, now=clock.now())
    if changed:
        notify(runtime, session, payment)
    return changed


def refresh(runtime: Runtime, session: Session, payment: Payment) -> None:
    """Back from the gateway's authentication step: ask where the charge stands (commits)."""
    if payment.status is not PaymentStatus.PROCESSING or not payment.gateway_reference:
        return
    if elsewhere(runtime, payment) is not None:
        return
    try:
        result = runtime.gateway(session).retrieve(payment.gateway_reference)
    except GatewayError:
        return
    apply(runtime, session, payment, result)
    commit_now(session, "the gateway's answer stands, whatever the page does next")


def reconcile(runtime: Runtime, session: Session, payment_id: int) -> str:
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
        if elsewhere(runtime, payment) is not None:
            return "another gateway's"  # left alone: the sweep reports how many
        gw = runtime.gateway(session)
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
                apply(runtime, session, payment, result)
            elif now - payments.charging_since(payment) > payments.KEY_LIFETIME:
                log.error(
                    "payment %s has no gateway reference after a day: check it by hand",
                    payment.public_id,
                )
                return "needs review"
            else:
                _charge(runtime, session, gw, payment, now)
        except GatewayConflict:
            log.error(
                "gateway refuses payment %s's key with these parameters: check it by hand",
                payment.public_id,
            )
            return "needs review"
        except GatewayError:
            log.warning("gateway still unreachable for payment %s", payment.id)
        commit_now(session, "one payment's reconciliation stands before the next one's")
        return payment.status.value
