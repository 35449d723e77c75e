"""The invoice as a PDF: `pdf/invoice.html` rendered by Jinja and converted by xhtml2pdf.

Everything the template shows is formatted here (money, dates, quantities, tax rates) for one
locale, so the template only lays it out. Fonts are DejaVu from Debian's fonts-dejavu-core,
the only files a render may read: Latin with accents, Greek, Cyrillic and Arabic all draw.
xhtml2pdf joins Arabic letters (arabic-reshaper) and puts each line in visual order itself.

PDFs are cached per invoice *version*: the version changes with every update of the invoice
row, so a cached file never outlives the figures it shows.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

import jinja2
from babel.dates import format_date
from babel.numbers import format_decimal, format_percent
from xhtml2pdf import pisa
from xhtml2pdf.config.resources import ResourceAccessPolicy

from portal import metrics
from portal.models import Company, Invoice
from portal.services.money import format_money

TEMPLATE = "pdf/invoice.html"
BRAND = "Billing Portal"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_REGULAR = FONT_DIR / "DejaVuSans.ttf"
FONT_BOLD = FONT_DIR / "DejaVuSans-Bold.ttf"

# A render reads the two fonts and nothing else: no network, no working directory. The other
# limits are xhtml2pdf's "server" ones (time, depth, size), generous for an invoice.
_POLICY = ResourceAccessPolicy.server(
    None, extra_roots=(FONT_DIR,), allow_remote=False, max_render_seconds=120
)

_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:_[A-Za-z0-9]{2,8})*")
_PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]+")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
# LRM, RLM, ALM and the embedding, override and isolate controls.
_BIDI_MARKS = dict.fromkeys(
    map(ord, "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
)


class InvoicePdfError(RuntimeError):
    """The invoice could not be converted: fonts missing, or errors from xhtml2pdf."""


@dataclass(frozen=True)
class PdfLine:
    description: str
    quantity: str
    unit_price: str
    tax_rate: str
    amount: str


@dataclass(frozen=True)
class PdfInvoice:
    """What the template shows, every value already formatted for the locale."""

    brand: str
    company_name: str
    account_name: str
    account_number: str
    bill_to: list[str]
    number: str
    reference: str
    issue_date: str
    due_date: str
    currency: str
    lines: list[PdfLine]
    subtotal: str
    tax_total: str
    total: str
    amount_paid: str  # by payments; credit notes are their own row
    credits_applied: str | None  # None: no credit was given against the invoice
    credit_notes: list[str]  # their numbers
    balance_due: str
    font_regular: str
    font_bold: str


def invoice_view(
    invoice: Invoice,
    company: Company,
    *,
    locale: str,
    credit_notes: Sequence[str] = (),
    date_locale: str | None = None,
) -> PdfInvoice:
    """The invoice formatted for `locale` (its dates for `date_locale`, the language, when the
    reader chose another number format), as the PDF template reads it; `credit_notes` are the
    numbers of the credit notes given against it."""
    currency = invoice.currency
    account = invoice.billing_account
    credited = invoice.amount_credited or 0  # an unsaved invoice has none yet

    def money(minor: int) -> str:
        return plain(format_money(minor, currency, locale))

    def day(value: date) -> str:
        return plain(format_date(value, format="medium", locale=date_locale or locale))

    def percent(basis_points: int) -> str:
        # The locale's own pattern, keeping the basis points' decimals: 8.25 %.
        value = Decimal(basis_points).scaleb(-4)
        return plain(format_percent(value, locale=locale, decimal_quantization=False))

    return PdfInvoice(
        brand=BRAND,
        company_name=company.name,
        account_name=account.name,
        account_number=account.number,
        bill_to=[line.strip() for line in (account.bill_to or "").splitlines() if line.strip()],
        number=invoice.number,
        reference=invoice.reference or "",
        issue_date=day(invoice.issue_date),
        due_date=day(invoice.due_date),
        currency=currency,
        lines=[
            PdfLine(
                description=line.description,
                quantity=plain(format_decimal(line.quantity, locale=locale)),
                unit_price=money(line.unit_price),
                tax_rate=percent(line.tax_rate_bp),
                amount=money(line.amount),
            )
            for line in invoice.lines
        ],
        subtotal=money(invoice.subtotal),
        tax_total=money(invoice.tax_total),
        total=money(invoice.total),
        amount_paid=money(invoice.amount_paid - credited),
        credits_applied=money(credited) if credited else None,
        credit_notes=list(credit_notes),
        balance_due=money(invoice.balance_due),
        font_regular=str(FONT_REGULAR),
        font_bold=str(FONT_BOLD),
    )


def plain(text: str) -> str:
    """A locale-formatted value without its bidi marks, to be read left to right.

    The page is English, so left to right. Babel's Arabic formats carry right-to-left marks
    meant for a right-to-left page ("01\\u200f/03\\u200f/2025"); laid out left to right, the
    marks scramble the value ("012025/03/"). Without them it reads as written: 01/03/2025.
    """
    return text.translate(_BIDI_MARKS)


def render_invoice_pdf(
    invoice: Invoice,
    company: Company,
    *,
    locale: str,
    template_env: jinja2.Environment,
    credit_notes: Sequence[str] = (),
    date_locale: str | None = None,
) -> bytes:
    """The invoice as PDF bytes, from `pdf/invoice.html` in `template_env` (the app's); the
    time it took goes to /metrics (portal_invoice_pdf_seconds)."""
    with metrics.timed(metrics.invoice_pdf):
        return _render_invoice_pdf(
            invoice,
            company,
            locale=locale,
            template_env=template_env,
            credit_notes=credit_notes,
            date_locale=date_locale,
        )


def _render_invoice_pdf(
    invoice: Invoice,
    company: Company,
    *,
    locale: str,
    template_env: jinja2.Environment,
    credit_notes: Sequence[str],
    date_locale: str | None,
) -> bytes:
    # xhtml2pdf falls back to Helvetica when a font cannot be read and says so only in its
    # log; that would draw Greek, Cyrillic and Arabic names as blanks. Refuse instead.
    missing = [str(font) for font in (FONT_REGULAR, FONT_BOLD) if not font.is_file()]
    if missing:
        raise InvoicePdfError(f"fonts missing (install fonts-dejavu-core): {', '.join(missing)}")
    html = template_env.get_template(TEMPLATE).render(
        invoice=invoice_view(
            invoice, company, locale=locale, credit_notes=credit_notes, date_locale=date_locale
        )
    )
    return html_to_pdf(html, invoice.number)


def html_to_pdf(html: str, what: str) -> bytes:
    """xhtml2pdf with the fonts and limits above; raises InvoicePdfError on any error."""
    out = io.BytesIO()
    status = pisa.CreatePDF(html, dest=out, encoding="utf-8", resource_policy=_POLICY)
    if status.err:
        raise InvoicePdfError(f"xhtml2pdf reported {status.err} error(s) for {what}")
    return out.getvalue()


def cached_invoice_pdf(
    invoice: Invoice,
    company: Company,
    *,
    locale: str,
    template_env: jinja2.Environment,
    cache_dir: Path,
    credit_notes: Sequence[str] = (),
    date_locale: str | None = None,
) -> bytes:
    """The invoice's PDF for this version and locale, rendered once and then read from disk.

    `<public_id>-v<version>-<locale>.pdf` in `cache_dir`, written atomically (a reader sees
    the whole file or none). Writing a new version deletes the files of older ones.
    """
    if not _PUBLIC_ID.fullmatch(invoice.public_id or ""):
        raise ValueError(f"unexpected public id {invoice.public_id!r}")
    dates = date_locale or locale
    if not _LOCALE.fullmatch(locale) or not _LOCALE.fullmatch(dates):
        raise ValueError(f"unexpected locale {locale!r} / {dates!r}")
    version = int(invoice.version)
    both = locale if dates == locale else f"{locale}+{dates}"
    path = (
        cache_dir / f"{invoice.public_id}-v{version}-{both}-"
        f"{_context_digest(invoice, company, credit_notes)}.pdf"
    )
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    pdf = render_invoice_pdf(
        invoice,
        company,
        locale=locale,
        template_env=template_env,
        credit_notes=credit_notes,
        date_locale=dates,
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(pdf)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _delete_older_versions(cache_dir, invoice.public_id, version, keep=path.name)
    return pdf


def _context_digest(invoice: Invoice, company: Company, credit_notes: Sequence[str] = ()) -> str:
    """What the PDF shows besides the invoice row itself (which has its own version): the
    company, the billing account and the credit notes' numbers. A change to any must not serve
    a stale PDF."""
    account = invoice.billing_account
    shown = "\x1f".join(
        [company.name, account.name, account.number, account.bill_to or "", *credit_notes]
    ).encode()
    return hashlib.sha256(shown).hexdigest()[:10]


def _delete_older_versions(cache_dir: Path, public_id: str, version: int, keep: str) -> None:
    """Drop this invoice's PDFs of earlier versions, and of this version drawn for an older
    company or account; newer versions stay."""
    pattern = re.compile(rf"{re.escape(public_id)}-v(\d+)-[A-Za-z0-9_]+-[0-9a-f]+\.pdf")
    for old in cache_dir.glob(f"{public_id}-v*.pdf"):
        match = pattern.fullmatch(old.name)
        if not match or old.name == keep:
            continue
        if int(match.group(1)) < version or (
            int(match.group(1)) == version and old.name.rsplit("-", 1)[0] in keep
        ):
            old.unlink(missing_ok=True)


def pdf_filename(invoice: Invoice) -> str:
    """The download name, `invoice-INV-1001.pdf`: ASCII letters, digits, `.`, `_` and `-`."""
    safe = _UNSAFE_FILENAME.sub("-", invoice.number or "").strip(".-")[:80].strip(".-")
    return f"invoice-{safe}.pdf" if safe else "invoice.pdf"
