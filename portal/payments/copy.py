"""The words for each payment refusal and field error (the runbook's copy where it has one)."""

from __future__ import annotations

from babel.numbers import get_currency_precision
from flask_babel import gettext as _
from flask_babel import ngettext

from portal.services.money import MAX_MINOR, AmountError
from portal.services.payments.rules import FieldError, Problem
from portal.templating import money


def field_error(error: FieldError, **values: str) -> str:
    messages = {
        FieldError.AMOUNT_INVALID: _("Enter an amount, like 125.00."),
        FieldError.AMOUNT_DECIMALS: _("Use at most two decimals."),
        FieldError.AMOUNT_NOT_POSITIVE: _("Enter an amount above zero."),
        FieldError.AMOUNT_TOO_LARGE: _(
            "Enter an amount up to %(maximum)s.", maximum=values.get("maximum", "")
        ),
        FieldError.AMOUNT_ABOVE_BALANCE: _(
            "That is more than the %(available)s you can pay on this invoice.",
            available=values.get("available", ""),
        ),
        FieldError.PARTIAL_NOT_ALLOWED: _(
            "%(company)s pays invoices in full: pay the whole %(available)s or leave it out.",
            company=values.get("company", ""),
            available=values.get("available", ""),
        ),
        FieldError.TOTAL_ABOVE_BALANCE: _(
            "That is more than the %(available)s due on these invoices.",
            available=values.get("available", ""),
        ),
        FieldError.NOTHING_TO_PAY: _("Enter an amount for at least one invoice."),
        FieldError.METHOD_REQUIRED: _("Choose how to pay."),
        FieldError.METHOD_EXPIRED: _("This card has expired. Choose another or add a new one."),
        FieldError.DATE_INVALID: _("Enter a date like 2026-12-31."),
        FieldError.DATE_IN_PAST: _("Choose today or a later date."),
        FieldError.DATE_TOO_FAR: _("Schedule at most a year ahead."),
        FieldError.METHOD_CANNOT_SCHEDULE: _("Choose another method to schedule a payment."),
    }
    return str(messages[error])


def amount_error(error: FieldError | AmountError, currency: str) -> str:
    """What is wrong with a typed amount (payment or dispute): the same rule, the same words.
    Too many decimals is said in the currency's own terms (yen have none, dinars three)."""
    if error.value == FieldError.AMOUNT_DECIMALS.value:
        digits = get_currency_precision(currency)
        if digits == 0:
            return str(_("Enter a whole amount: %(currency)s has no decimals.", currency=currency))
        if digits != 2:
            return str(
                ngettext("Use at most %(num)d decimal.", "Use at most %(num)d decimals.", digits)
            )
    return field_error(FieldError(error.value), maximum=money(MAX_MINOR, currency))


def problem(problem: Problem, number: str = "") -> str:
    messages = {
        Problem.NOTHING_SELECTED: _("Choose the invoices to pay from your invoice list."),
        Problem.TOO_MANY: _("Pay at most 50 invoices at a time."),
        Problem.NOT_FOUND: _("Invoice not found."),
        Problem.ALREADY_PAID: _("Payment already processed."),
        Problem.IN_FLIGHT: _("Payment already processed."),
        Problem.NOT_PAYABLE: _(
            "Invoice %(number)s can't be paid online in its current state.", number=number
        ),
        Problem.MIXED_CURRENCIES: _(
            "One currency per payment: pay the invoices of each currency separately."
        ),
    }
    return str(messages[problem])


def problem_detail(problem: Problem, number: str = "") -> str | None:
    if problem is Problem.ALREADY_PAID:
        return str(_("Invoice %(number)s is already paid.", number=number))
    if problem is Problem.IN_FLIGHT:
        return str(
            _("A payment for invoice %(number)s is already on its way or scheduled.", number=number)
        )
    return None


def failure_reason(code: str | None) -> str:
    reasons = {
        "card_declined": _("your card was declined"),
        "insufficient_funds": _("your card has insufficient funds"),
        "expired_card": _("your card has expired"),
        "incorrect_cvc": _("the security code was wrong"),
        "authentication_required": _("your bank did not confirm the payment"),
        "payment_method_unavailable": _("this payment method is no longer available"),
        "bank_account_declined": _("your bank declined the debit"),
        "invoice_already_paid": _("the invoice was already paid"),
        "invoice_disputed": _("an invoice it pays was disputed"),
    }
    return str(reasons.get(code or "", _("the payment could not be processed")))
