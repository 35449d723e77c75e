"""A notification's words: (title, body) from its topic and params, in the reader's language.

Nothing of the text is stored; the centre renders it when drawn (so it follows a change of
language) and the mail when sent. Gettext answers in the active language (the request's, or the
one a mail job forces); amounts and dates are formatted in `locale` and isolated from the
sentence around them (Unicode isolates), so a right-to-left reading never reorders them.
Params a notification lacks read as empty: an old row never breaks the page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from babel.dates import format_datetime
from flask_babel import gettext as _

from portal import i18n
from portal.models import NotificationTopic
from portal.templating import format_date, money

Params = Mapping[str, object]
_LRI, _FSI, _PDI = "\u2066", "\u2068", "\u2069"


@dataclass(frozen=True)
class Message:
    title: str
    body: str


def _text(params: Params, name: str) -> str:
    value = params.get(name)
    return "" if value is None else str(value)


def _amount(params: Params, locale: str) -> str:
    amount, currency = params.get("amount"), params.get("currency")
    if not isinstance(amount, int) or not isinstance(currency, str) or len(currency) != 3:
        return ""
    return f"{_LRI}{money(amount, currency, locale)}{_PDI}"


def _date(params: Params, name: str, locale: str) -> str:
    try:
        value = date.fromisoformat(_text(params, name))
    except ValueError:
        return ""
    return f"{_FSI}{format_date(value, 'medium', locale)}{_PDI}"


def _month(params: Params, locale: str) -> str:
    try:
        first = date.fromisoformat(f"{_text(params, 'month')}-01")
    except ValueError:
        return ""
    return f"{_FSI}{format_date(first, 'MMMM y', locale)}{_PDI}"


def _number(params: Params, name: str) -> str:
    return f"{_LRI}{_text(params, name)}{_PDI}"


def _invoice_issued(p: Params, locale: str) -> Message:
    return Message(
        _("New invoice %(invoice)s", invoice=_number(p, "invoice")),
        _(
            "Invoice %(invoice)s for %(amount)s is due on %(due)s.",
            invoice=_number(p, "invoice"),
            amount=_amount(p, locale),
            due=_date(p, "due_date", locale),
        ),
    )


def _payment_due(p: Params, locale: str) -> Message:
    return Message(
        _("Invoice %(invoice)s is due soon", invoice=_number(p, "invoice")),
        _(
            "%(amount)s is due on %(due)s.",
            amount=_amount(p, locale),
            due=_date(p, "due_date", locale),
        ),
    )


def _payment_overdue(p: Params, locale: str) -> Message:
    return Message(
        _("Invoice %(invoice)s is overdue", invoice=_number(p, "invoice")),
        _(
            "%(amount)s was due on %(due)s.",
            amount=_amount(p, locale),
            due=_date(p, "due_date", locale),
        ),
    )


def _payment_receipt(p: Params, locale: str) -> Message:
    return Message(
        _("Payment received"),
        _(
            "Your payment %(reference)s of %(amount)s was received.",
            reference=_number(p, "reference"),
            amount=_amount(p, locale),
        ),
    )


def _payment_failed(p: Params, locale: str) -> Message:
    return Message(
        _("Scheduled payment canceled: %(amount)s", amount=_amount(p, locale))
        if p.get("canceled")
        else _("Payment failed"),
        _(
            "Your payment %(reference)s of %(amount)s did not go through.",
            reference=_number(p, "reference"),
            amount=_amount(p, locale),
        ),
    )


def _statement_ready(p: Params, locale: str) -> Message:
    return Message(
        _("Your statement is ready"),
        _(
            "Your statement for %(start)s to %(end)s is ready to download.",
            start=_date(p, "start", locale),
            end=_date(p, "end", locale),
        ),
    )


def _monthly_statement(p: Params, locale: str) -> Message:
    return Message(
        _("Your monthly statement is ready"),
        _("Your statement for %(month)s is ready to download.", month=_month(p, locale)),
    )


def _dispute_updated(p: Params, locale: str) -> Message:
    invoice = _number(p, "invoice")
    event = _text(p, "event")
    if event == "reply":
        body = _("There is a new reply on the dispute of invoice %(invoice)s.", invoice=invoice)
    elif event == "credit_issued":
        body = _("The dispute of invoice %(invoice)s was resolved with a credit.", invoice=invoice)
    elif event == "rejected":
        body = _("The dispute of invoice %(invoice)s was rejected.", invoice=invoice)
    elif event == "withdrawn":
        body = _("The dispute of invoice %(invoice)s was withdrawn.", invoice=invoice)
    else:
        body = _("The dispute of invoice %(invoice)s was updated.", invoice=invoice)
    reason = _text(p, "reason")
    if reason:
        body = _("%(update)s Reason: %(reason)s", update=body, reason=f"{_FSI}{reason}{_PDI}")
    return Message(_("Dispute on invoice %(invoice)s updated", invoice=invoice), body)


# The three topics below are filled in by their features (security alerts, autopay, card expiry);
# each renders from its own params and keeps its own words.


def alert_title(kind: str) -> str:
    """What happened, as an alert's title says it (a security alert's `kind`)."""
    titles = {
        "new_sign_in": _("New sign-in to your account"),
        "failed_attempts": _("Several failed sign-in attempts on your account"),
        "mfa_reset": _("Your two-step verification was reset"),
        "api_token_created": _("A new API token was created"),
        "password_changed": _("Your password was changed"),
        "email_changed": _("Your e-mail address was changed"),
        "payment_method_added": _("A payment method was added"),
        "recovery_codes_issued": _("New recovery codes were issued for your account"),
    }
    return str(titles.get(kind, _("Security alert")))


def alert_time(at: str, tz: str, locale: str) -> str:
    """When an alert's event happened, in the reader's time zone ("" when unreadable)."""
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    zone = i18n.zone(tz)
    text = format_datetime(moment, "medium", tzinfo=zone, locale=locale.replace("-", "_"))
    name = getattr(zone, "key", "UTC")
    return f"{_FSI}{text} ({name}){_PDI}"


def _security_alert(p: Params, locale: str) -> Message:
    if p.get("digest"):
        return Message(_("Daily security digest"), _("Security alerts of your company's users."))
    when = alert_time(_text(p, "at"), _text(p, "tz"), locale)
    ip = _text(p, "ip") or _("unknown")
    device = _text(p, "device") or _("an unknown device")
    return Message(
        alert_title(_text(p, "kind")),
        _(
            "On %(when)s, from %(ip)s (%(device)s). If this wasn't you, secure your account now.",
            when=when,
            ip=f"{_LRI}{ip}{_PDI}",
            device=f"{_FSI}{device}{_PDI}",
        ),
    )


# ---


def _autopay(p: Params, locale: str) -> Message:
    invoice, amount = _number(p, "invoice"), _amount(p, locale)
    day, method = _date(p, "day", locale), f"{_FSI}{_text(p, 'method')}{_PDI}"
    account = f"{_FSI}{_text(p, 'account')}{_PDI}"
    event = _text(p, "event")
    if event == "notice":
        return Message(
            _("Invoice %(invoice)s will be paid automatically", invoice=invoice),
            _(
                "We will charge %(amount)s to %(method)s on %(day)s for invoice %(invoice)s. "
                "To pay it another way, skip this invoice before then.",
                amount=amount,
                method=method,
                day=day,
                invoice=invoice,
            ),
        )
    if event == "failed":
        return Message(
            _("Automatic payment of invoice %(invoice)s failed", invoice=invoice),
            _(
                "We could not charge %(amount)s to %(method)s for invoice %(invoice)s. "
                "We will try again on %(day)s.",
                amount=amount,
                method=method,
                invoice=invoice,
                day=day,
            ),
        )
    if event == "stopped":
        return Message(
            _("Automatic payment of invoice %(invoice)s stopped", invoice=invoice),
            _(
                "We stopped trying to charge %(method)s for invoice %(invoice)s after three "
                "failed attempts. Please pay it yourself.",
                method=method,
                invoice=invoice,
            ),
        )
    if event == "disputed":
        return Message(
            _("Invoice %(invoice)s was not charged", invoice=invoice),
            _(
                "Invoice %(invoice)s is disputed, so it will not be paid automatically.",
                invoice=invoice,
            ),
        )
    if event.startswith("off_"):
        if event == "off_method_removed":
            why = _("its payment method %(method)s was removed", method=method)
        elif event == "off_consent_lost":
            why = _("the person who turned it on can no longer manage it")
        else:
            why = _("it was turned off")
        return Message(
            _("Automatic payments turned off"),
            _(
                "Automatic payments for %(account)s are off because %(why)s. "
                "Turn them on again with another payment method, or pay invoices yourself.",
                account=account,
                why=why,
            ),
        )
    return Message(_("Automatic payment"), _text(p, "what"))


# ---


def _card_expiring(p: Params, locale: str) -> Message:
    card = _(
        "%(brand)s ending %(last4)s",
        brand=f"{_FSI}{_text(p, 'brand').title()}{_PDI}",
        last4=_number(p, "last4"),
    )
    if p.get("expired"):
        return Message(
            _("Your card has expired"),
            _(
                "%(card)s expired at the end of %(month)s. Update it on the payment methods "
                "page so that scheduled payments go through.",
                card=card,
                month=_month(p, locale),
            ),
        )
    return Message(
        _("Card expiring soon"),
        _(
            "%(card)s expires at the end of %(month)s. Update it on the payment methods page "
            "so that scheduled payments go through.",
            card=card,
            month=_month(p, locale),
        ),
    )


_RENDERERS: dict[NotificationTopic, Callable[[Params, str], Message]] = {
    NotificationTopic.INVOICE_ISSUED: _invoice_issued,
    NotificationTopic.PAYMENT_DUE: _payment_due,
    NotificationTopic.PAYMENT_OVERDUE: _payment_overdue,
    NotificationTopic.PAYMENT_RECEIPT: _payment_receipt,
    NotificationTopic.PAYMENT_FAILED: _payment_failed,
    NotificationTopic.STATEMENT_READY: _statement_ready,
    NotificationTopic.MONTHLY_STATEMENT: _monthly_statement,
    NotificationTopic.DISPUTE_UPDATED: _dispute_updated,
    NotificationTopic.SECURITY_ALERT: _security_alert,
    NotificationTopic.AUTOPAY: _autopay,
    NotificationTopic.CARD_EXPIRING: _card_expiring,
}


def render(topic: NotificationTopic, params: Params, locale: str) -> Message:
    """The title and body of a notification, in the active language, formatted in `locale`."""
    return _RENDERERS[topic](params, locale)


def topic_label(topic: NotificationTopic) -> str:
    """The name of a kind of notification, as the preferences page and the mail footer say it."""
    labels = {
        NotificationTopic.INVOICE_ISSUED: _("New invoices"),
        NotificationTopic.PAYMENT_DUE: _("Payment due reminders"),
        NotificationTopic.PAYMENT_OVERDUE: _("Overdue reminders"),
        NotificationTopic.PAYMENT_RECEIPT: _("Payment receipts"),
        NotificationTopic.PAYMENT_FAILED: _("Failed payments"),
        NotificationTopic.STATEMENT_READY: _("Statements ready"),
        NotificationTopic.MONTHLY_STATEMENT: _("Monthly statement"),
        NotificationTopic.DISPUTE_UPDATED: _("Dispute updates"),
        NotificationTopic.SECURITY_ALERT: _("Security alerts"),
        NotificationTopic.AUTOPAY: _("Automatic payments"),
        NotificationTopic.CARD_EXPIRING: _("Cards about to expire"),
    }
    return str(labels[topic])
