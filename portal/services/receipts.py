"""A payment's receipt as PDF (xhtml2pdf, the same fonts and limits as invoices)."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
from babel.dates import format_date, format_datetime

from portal.models import Company, Payment, PaymentMethodKind
from portal.services.invoice_pdf import BRAND, FONT_BOLD, FONT_REGULAR, html_to_pdf, plain
from portal.services.money import format_money

TEMPLATE = "pdf/receipt.html"


@dataclass(frozen=True)
class ReceiptLine:
    number: str
    issued: str
    amount: str


@dataclass(frozen=True)
class ReceiptView:
    brand: str
    font_regular: str
    font_bold: str
    company: str
    account: str
    number: str
    paid_at: str
    method: str
    amount: str
    lines: list[ReceiptLine]


def method_label(payment: Payment) -> str:
    method = payment.payment_method
    if method is None:
        return "—"
    if method.kind is PaymentMethodKind.BANK_ACCOUNT:
        return f"Bank account ending {method.last4}"
    return f"{method.brand.title()} ending {method.last4}"


def receipt_view(
    payment: Payment, company: Company, *, locale: str, date_locale: str | None = None
) -> ReceiptView:
    """The receipt formatted for `locale`, its dates for `date_locale` (else `locale`)."""
    dates = date_locale or locale

    def money(minor: int) -> str:
        return plain(format_money(minor, payment.currency, locale))

    return ReceiptView(
        brand=BRAND,
        font_regular=str(FONT_REGULAR),
        font_bold=str(FONT_BOLD),
        company=company.name,
        account=payment.billing_account.name,
        number=payment.reference,
        paid_at=plain(format_datetime(payment.processed_at, "medium", locale=dates))
        if payment.processed_at
        else "",
        method=method_label(payment),
        amount=money(payment.amount),
        lines=[
            ReceiptLine(
                number=a.invoice.number,
                issued=plain(format_date(a.invoice.issue_date, "medium", locale=dates)),
                amount=money(a.amount),
            )
            for a in payment.allocations
        ],
    )


def render_pdf(
    payment: Payment,
    company: Company,
    *,
    locale: str,
    template_env: jinja2.Environment,
    date_locale: str | None = None,
) -> bytes:
    html = template_env.get_template(TEMPLATE).render(
        receipt=receipt_view(payment, company, locale=locale, date_locale=date_locale)
    )
    return html_to_pdf(html, f"receipt {payment.reference}")


def filename(payment: Payment) -> str:
    return f"receipt-{payment.reference}.pdf"
