"""Telling the payer: the outcome of a payment, by mail, once, after the commit."""

from __future__ import annotations

from flask import render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from portal import tenancy
from portal.i18n import SUPPORTED_LOCALES
from portal.models import Company, Payment, PaymentStatus, PortalUser
from portal.payments.copy import failure_reason
from portal.runtime import SEND_PAYMENT_RESULT, Runtime
from portal.services import outbox, payments
from portal.templating import money


def notify(runtime: Runtime, session: Session, payment: Payment) -> None:
    """A payment that reached its end tells its payer, once, after the commit."""
    if payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED):
        runtime.hand_off(
            session, SEND_PAYMENT_RESULT, payment.id, subject=outbox.about_payment(payment.id)
        )


def notify_canceled(runtime: Runtime, session: Session, payment: Payment) -> None:
    """A scheduled payment the portal canceled on its day (its invoice was paid another way)."""
    runtime.hand_off(
        session, SEND_PAYMENT_RESULT, payment.id, subject=outbox.about_payment(payment.id)
    )


def mail_result(runtime: Runtime, session: Session, payment_id: int) -> str:
    """E-mail the payer the outcome (with the receipt link when it succeeded), in their language,
    with money and dates formatted in their locale (passed explicitly: a job has no signed-in
    user)."""
    with tenancy.system(session):
        payment = payments.get_payment_by_id(session, payment_id)
        if payment is None or payment.user_id is None:
            return "no payer"
        user = session.get(PortalUser, payment.user_id)
        company = session.get(Company, payment.company_id)
        if user is None or company is None:
            return "no payer"
        locale = str(user.locale or company.locale or "en")
        language = locale.split("_")[0]
        with force_locale(language if language in SUPPORTED_LOCALES else "en"):
            amount = money(payment.amount, payment.currency, locale)
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
                locale=locale,
                reason=failure_reason(payment.failure_code),
                link=runtime.links.payment(payment.public_id),
            )
        runtime.mailer.send(user.email, subject, text)
        return "sent"
