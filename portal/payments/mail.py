"""Telling the payer: the outcome of a payment, once, after the commit.

A payment that succeeded or failed is a notification of its payer (PAYMENT_RECEIPT or
PAYMENT_FAILED, `portal.notifications.notify`, once per payment): a row in the centre that links
to the payment (and its receipt) when the portal channel is on, and this module's own mail (the
receipt's details, or why it failed and how to retry) when the e-mail channel is on, checked
again when sent, with the unsubscribe link and RFC 8058 headers of every notification mail. A
scheduled payment the portal canceled (its invoice was paid another way, or disputed) is told
the same way under PAYMENT_FAILED (a payment that did not happen), with its own words."""

from __future__ import annotations

from flask import render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from portal import clock, tenancy
from portal.i18n import language_of
from portal.models import Company, NotificationTopic, Payment, PaymentStatus, PortalUser
from portal.notifications import mail as notification_mail
from portal.notifications import messages
from portal.notifications import notify as notify_user
from portal.payments.copy import failure_reason
from portal.runtime import SEND_PAYMENT_RESULT, Runtime
from portal.services import notifications, outbox, payments
from portal.templating import money

TOPICS = {
    PaymentStatus.SUCCEEDED: NotificationTopic.PAYMENT_RECEIPT,
    PaymentStatus.FAILED: NotificationTopic.PAYMENT_FAILED,
    PaymentStatus.CANCELED: NotificationTopic.PAYMENT_FAILED,
}


def notify(runtime: Runtime, session: Session, payment: Payment) -> None:
    """A payment that reached its end tells its payer, once, as they chose (the centre, the
    mail handed off after the commit, both or neither)."""
    _tell(runtime, session, payment, (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED))


def notify_canceled(runtime: Runtime, session: Session, payment: Payment) -> None:
    """A scheduled payment the portal canceled (on its day, its invoice paid another way; or
    its invoice disputed): told like a failed one, as the payer chose for failed payments."""
    _tell(runtime, session, payment, (PaymentStatus.CANCELED,))


def _tell(
    runtime: Runtime, session: Session, payment: Payment, statuses: tuple[PaymentStatus, ...]
) -> None:
    topic = TOPICS.get(payment.status)
    if payment.status not in statuses or topic is None or payment.user_id is None:
        return
    with tenancy.system(session):  # the payer, whoever's request or job this is
        user = session.get(PortalUser, payment.user_id)
        if user is None:
            return
        notify_user(
            runtime,
            session,
            user,
            topic,
            key=f"payment:{payment.public_id}",
            params={
                "reference": payment.reference,
                "amount": payment.amount,
                "currency": payment.currency,
                **({"canceled": 1} if payment.status is PaymentStatus.CANCELED else {}),
            },
            link=f"/portal/payments/{payment.public_id}",
            mail=(SEND_PAYMENT_RESULT, (payment.id,), outbox.about_payment(payment.id)),
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
        if user is None or company is None or not user.is_active:
            return "no payer"
        topic = TOPICS.get(payment.status)
        if topic is not None and not notifications.channels(session, user, topic)["email"]:
            return "opted out"
        leave = (
            notification_mail.unsubscribe(runtime, user, topic, clock.now())
            if topic is not None
            else None
        )
        locale = str(user.locale or company.locale or "en")
        with force_locale(language_of(locale)):
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
                topic=messages.topic_label(topic) if topic else None,
                unsubscribe=leave.link if leave else None,
                preferences=runtime.links.public("/portal/notifications"),
            )
        runtime.mailer.send(user.email, subject, text, headers=leave.headers if leave else None)
        return "sent"
