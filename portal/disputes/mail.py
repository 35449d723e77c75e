"""The receivables team's mail about a dispute: a new one, a customer's message, or a
withdrawal.

Sent to DISPUTES_EMAIL from a job handed off in the transaction that recorded what the
customer did (the outbox never sends it twice). The team answers with `flask --app wsgi
disputes reply|resolve|reject`.
"""

from __future__ import annotations

from flask import render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy.orm import Session, selectinload

from portal import tenancy
from portal.models import Company, Dispute, DisputeMessage, Invoice
from portal.runtime import Runtime
from portal.templating import money


def mail_receivables(
    runtime: Runtime, session: Session, dispute_id: int, event: str, message_id: int | None
) -> str:
    with tenancy.system(session):
        dispute = session.get(Dispute, dispute_id)
        if dispute is None:
            return "no dispute"
        invoice = session.get(Invoice, dispute.invoice_id)
        company = session.get(Company, dispute.company_id)
        message = (
            session.get(
                DisputeMessage,
                message_id,
                options=[selectinload(DisputeMessage.attachments)],
            )
            if message_id is not None
            else None
        )
        if invoice is None or company is None:
            return "no dispute"
        context = {
            "dispute": dispute,
            "invoice": invoice,
            "company": company,
            "message": message,
            "event": event,
            "amount": money(dispute.amount_disputed, invoice.currency, "en"),
            "author": message.author.name if message and message.author else "",
        }
        with force_locale("en"):
            if event == "opened":
                subject = _(
                    "New dispute: %(number)s (%(company)s)",
                    number=invoice.number,
                    company=company.name,
                )
            elif event == "withdrawn":
                subject = _(
                    "Dispute withdrawn: %(number)s (%(company)s)",
                    number=invoice.number,
                    company=company.name,
                )
            else:
                subject = _(
                    "New message on the dispute of %(number)s (%(company)s)",
                    number=invoice.number,
                    company=company.name,
                )
            text = render_template("mail/dispute_receivables.txt", **context)
            html = render_template("mail/dispute_receivables.html", **context)
    runtime.mailer.send(runtime.settings.disputes_email, subject, text, html=html)
    return "sent"
