"""A gateway's events: verified, de-duplicated, applied once whatever the order."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy.orm import Session

from portal import clock, tenancy
from portal.db import commit_now
from portal.gateways import PaymentGateway
from portal.gateways.sandbox import SIGNATURE_HEADER, SandboxGateway
from portal.payments.charging import apply
from portal.runtime import Runtime
from portal.services import payments
from portal.services.payments import WebhookOutcome

log = logging.getLogger(__name__)


def receive(
    runtime: Runtime, session: Session, body: bytes, headers: Mapping[str, str]
) -> WebhookOutcome:
    """One webhook for the configured gateway. Raises InvalidSignature. Caller commits."""
    return _receive(runtime, session, runtime.gateway(session), body, headers)


def _receive(
    runtime: Runtime,
    session: Session,
    gw: PaymentGateway,
    body: bytes,
    headers: Mapping[str, str],
) -> WebhookOutcome:
    event = gw.parse_event(body, headers)
    if event is None:
        return WebhookOutcome.IGNORED
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
            return WebhookOutcome.IGNORED
        if not payments.record_event(session, gw.name, event, clock.now()):
            return WebhookOutcome.DUPLICATE
        changed = apply(runtime, session, payment, event.result)
    return WebhookOutcome.APPLIED if changed else WebhookOutcome.UNCHANGED


def settle_sandbox(runtime: Runtime, session: Session, reference: str) -> str:
    """The sandbox settles a bank debit and sends its signed webhook to the portal (a job)."""
    sandbox = runtime.gateway(session)
    assert isinstance(sandbox, SandboxGateway)
    signed = sandbox.settle(reference)
    commit_now(session, "the sandbox's settlement is its own, before the portal hears of it")
    if signed is None:
        return "unknown charge"
    body, signature = signed
    return _receive(runtime, session, sandbox, body, {SIGNATURE_HEADER: signature}).value
