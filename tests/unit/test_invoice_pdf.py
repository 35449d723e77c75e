"""The invoice PDF: what it says (read back with pypdf), its fonts and scripts, the cache."""

from __future__ import annotations

import io
import re
import unicodedata
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import arabic_reshaper
import jinja2
import pypdf
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import BillingAccount, Company, Invoice, InvoiceLine
from portal.services import invoice_pdf
from portal.services.invoice_pdf import (
    InvoicePdfError,
    cached_invoice_pdf,
    pdf_filename,
    render_invoice_pdf,
)
from portal.services.money import format_money
from tests import factories

TEMPLATES = Path(__file__).resolve().parents[2] / "portal" / "templates"
LOCALE = "en_US"


@pytest.fixture(scope="module")
def env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)


def unsaved_invoice(
    *,
    lines: int = 3,
    number: str = "INV-1001",
    company_name: str = "Acme Industrial Supply",
    amount_paid: int = 10_000,
    version: int = 1,
    description: str = "Support and hosting, month {i}",
) -> tuple[Invoice, Company]:
    """An unsaved invoice whose figures add up the way the database's checks require."""
    invoice_lines = [
        InvoiceLine(
            position=i,
            description=description.format(i=i),
            quantity=Decimal("2.500") if i % 2 else Decimal("1.000"),
            unit_price=12_345,
            tax_rate_bp=825,
            amount=30_862 if i % 2 else 12_345,
        )
        for i in range(1, lines + 1)
    ]
    subtotal = sum(line.amount for line in invoice_lines)
    tax_total = subtotal * 825 // 10_000
    total = subtotal + tax_total
    invoice = Invoice(
        number=number,
        reference="PO-7788",
        issue_date=date(2025, 3, 1),
        due_date=date(2025, 3, 31),
        currency="USD",
        subtotal=subtotal,
        tax_total=tax_total,
        total=total,
        amount_paid=amount_paid,
        balance_due=total - amount_paid,  # the database computes it; unsaved, we do
        version=version,
        lines=invoice_lines,
    )
    invoice.billing_account = BillingAccount(
        name="Head office",
        number="ACC-001",
        bill_to="Attn: Accounts payable\n1 Main Street\n\nSpringfield, IL 62701",
    )
    return invoice, Company(name=company_name, currency="USD", locale=LOCALE)


def pdf_text(pdf: bytes, **kwargs: Any) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text(**kwargs) for page in reader.pages)


def page_count(pdf: bytes) -> int:
    return len(pypdf.PdfReader(io.BytesIO(pdf)).pages)


def embedded_fonts(pdf: bytes) -> set[str]:
    """Base names of the TrueType fonts embedded on any page ("DejaVuSans", ...)."""
    names = set()
    for page in pypdf.PdfReader(io.BytesIO(pdf)).pages:
        resources: Any = page["/Resources"].get_object()
        for ref in resources.get("/Font", {}).values():
            font: Any = ref.get_object()
            descriptor = font.get("/FontDescriptor")
            if descriptor is not None and "/FontFile2" in descriptor.get_object():
                names.add(str(font["/BaseFont"]).split("+")[-1])
    return names


def test_pdf_holds_the_invoice_figures(env: jinja2.Environment) -> None:
    invoice, company = unsaved_invoice()
    pdf = render_invoice_pdf(invoice, company, locale=LOCALE, template_env=env)

    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    assert "Billing Portal" in text
    assert "INV-1001" in text
    assert "Acme Industrial Supply" in text
    assert "PO-7788" in text
    assert "Attn: Accounts payable" in text and "Springfield, IL 62701" in text
    assert "Head office (ACC-001)" in text
    assert "Mar 1, 2025" in text and "Mar 31, 2025" in text
    assert "Support and hosting, month 3" in text
    assert "8.25%" in text and "2.5" in text
    assert format_money(invoice.total, "USD", LOCALE) == "$801.79"
    assert format_money(invoice.balance_due, "USD", LOCALE) == "$701.79"
    assert "$801.79" in text
    assert re.search(r"Balance due\s*\$701\.79", text), text
    assert re.search(r"Amount paid\s*\$100\.00", text), text
    assert "How to pay" in text and "open invoice INV-1001" in text
    assert "Page 1 of 1" in text
    assert {"DejaVuSans", "DejaVuSans-Bold"} <= embedded_fonts(pdf)


def test_money_and_dates_follow_the_locale(env: jinja2.Environment) -> None:
    invoice, company = unsaved_invoice()
    pdf = render_invoice_pdf(invoice, company, locale="de_DE", template_env=env)
    # Babel writes "801,79 $" and "8,25 %" with a no-break space; pypdf reads a plain one.
    text = pdf_text(pdf).replace("\xa0", " ")
    assert format_money(invoice.total, "USD", "de_DE").replace("\xa0", " ") == "801,79 $"
    assert "Total\n 801,79 $" in text
    assert "Balance due\n 701,79 $" in text
    assert "01.03.2025" in text and "31.03.2025" in text
    assert "8,25 %" in text
    assert "\n 2,5\n" in text


def test_a_number_format_of_its_own_leaves_the_dates_to_the_language() -> None:
    invoice, company = unsaved_invoice()
    view = invoice_pdf.invoice_view(invoice, company, locale="de_DE", date_locale="en")
    assert "801,79" in str(view.total)  # numbers: the chosen format
    assert str(view.issue_date) == "Mar 1, 2025"  # dates: the language's words and order


def test_arabic_locale_values_read_left_to_right(env: jinja2.Environment) -> None:
    # Babel's Arabic date is "01\u200f/03\u200f/2025": right-to-left marks for a right-to-left
    # page. On this left-to-right page they would draw as "012025/03/"; the service drops them.
    invoice, company = unsaved_invoice()
    assert "\u200f" in format_money(invoice.total, "USD", "ar")
    pdf = render_invoice_pdf(invoice, company, locale="ar", template_env=env)
    drawn = pdf_text(pdf, extraction_mode="layout").replace("\xa0", " ")
    assert "01/03/2025" in drawn and "31/03/2025" in drawn
    assert "801.79 US$" in drawn and "701.79 US$" in drawn


def test_long_invoice_numbers_its_pages(env: jinja2.Environment) -> None:
    invoice, company = unsaved_invoice(lines=60)
    pdf = render_invoice_pdf(invoice, company, locale=LOCALE, template_env=env)
    pages = page_count(pdf)
    assert pages >= 2
    text = pdf_text(pdf)
    assert f"Page 1 of {pages}" in text and f"Page {pages} of {pages}" in text
    assert "Support and hosting, month 60" in text
    # Every page with lines on it starts the table with the column headings again.
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    with_lines = [page.extract_text() for page in reader.pages]
    with_lines = [page for page in with_lines if "Support and hosting" in page]
    assert len(with_lines) >= 2
    for page in with_lines:
        assert page.index("Unit price") < page.index("Support and hosting")


def test_line_text_is_escaped_not_markup(env: jinja2.Environment) -> None:
    invoice, company = unsaved_invoice(lines=1, description="Widgets <b>&amp;</b> gadgets")
    text = pdf_text(render_invoice_pdf(invoice, company, locale=LOCALE, template_env=env))
    assert "Widgets <b>&amp;</b> gadgets" in text


def test_arabic_company_name_is_readable_text(env: jinja2.Environment) -> None:
    name = "شركة الأفق"
    invoice, company = unsaved_invoice(company_name=name)
    pdf = render_invoice_pdf(invoice, company, locale=LOCALE, template_env=env)

    # xhtml2pdf joins the letters (arabic-reshaper), which writes Arabic Presentation Forms:
    # "ش" at the start of a word becomes U+FEB7, the lam-alef pair "لأ" the ligature U+FEF7.
    # NFKC maps each form back to the base letter(s), so normalised the name is the original.
    shaped = arabic_reshaper.reshape(name)
    assert shaped != name
    assert unicodedata.normalize("NFKC", shaped) == name

    # pypdf's default extraction puts right-to-left runs back into reading order.
    text = pdf_text(pdf)
    assert shaped in text
    assert name in unicodedata.normalize("NFKC", text)
    # Its layout mode reports glyphs left to right as drawn on the page: the joined forms
    # drawn in reverse, i.e. right to left. Unreordered text would show `shaped` here.
    drawn = pdf_text(pdf, extraction_mode="layout")
    assert shaped[::-1] in drawn and shaped not in drawn
    # Drawn with DejaVu (which has the presentation forms), not a base-14 fallback.
    assert "DejaVuSans-Bold" in embedded_fonts(pdf)


def test_accented_greek_and_cyrillic_name(env: jinja2.Environment) -> None:
    name = "Žluťoučký Ωmega Тест"
    invoice, company = unsaved_invoice(company_name=name)
    pdf = render_invoice_pdf(invoice, company, locale=LOCALE, template_env=env)
    text = unicodedata.normalize("NFC", pdf_text(pdf))
    assert name in text
    assert {"DejaVuSans", "DejaVuSans-Bold"} <= embedded_fonts(pdf)


def test_missing_font_is_an_error_not_a_fallback(
    env: jinja2.Environment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(invoice_pdf, "FONT_BOLD", tmp_path / "DejaVuSans-Bold.ttf")
    invoice, company = unsaved_invoice()
    with pytest.raises(InvoicePdfError, match="fonts-dejavu-core"):
        render_invoice_pdf(invoice, company, locale=LOCALE, template_env=env)


class CountingRenderer:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.real = invoice_pdf.render_invoice_pdf

    def __call__(self, invoice: Invoice, company: Company, **kwargs: Any) -> bytes:
        self.calls.append((invoice.version, kwargs["locale"]))
        return self.real(invoice, company, **kwargs)


@pytest.fixture
def renderer(monkeypatch: pytest.MonkeyPatch) -> CountingRenderer:
    counting = CountingRenderer()
    monkeypatch.setattr(invoice_pdf, "render_invoice_pdf", counting)
    return counting


def test_cache_renders_once_per_version(
    env: jinja2.Environment, tmp_path: Path, renderer: CountingRenderer
) -> None:
    cache_dir = tmp_path / "cache" / "invoices"  # not there yet
    invoice, company = unsaved_invoice()

    first = cached_invoice_pdf(
        invoice, company, locale=LOCALE, template_env=env, cache_dir=cache_dir
    )
    again = cached_invoice_pdf(
        invoice, company, locale=LOCALE, template_env=env, cache_dir=cache_dir
    )
    assert again == first
    assert renderer.calls == [(1, LOCALE)]
    v1 = cache_dir / f"{invoice.public_id}-v1-{LOCALE}.pdf"
    assert cached_names(cache_dir) == [v1.name]  # no temp file left
    assert cached_file(cache_dir, v1.stem).read_bytes() == first

    # A payment changes the invoice row, so its version.
    invoice.amount_paid += 20_000
    invoice.balance_due = invoice.total - invoice.amount_paid
    invoice.version = 2
    second = cached_invoice_pdf(
        invoice, company, locale=LOCALE, template_env=env, cache_dir=cache_dir
    )
    assert renderer.calls == [(1, LOCALE), (2, LOCALE)]
    assert second != first
    assert "$501.79" in pdf_text(second) and "$501.79" not in pdf_text(first)
    v2 = cache_dir / f"{invoice.public_id}-v2-{LOCALE}.pdf"
    assert cached_names(cache_dir) == [v2.name]  # v1 is gone
    assert cached_file(cache_dir, v2.stem).read_bytes() == second
    assert (
        cached_invoice_pdf(invoice, company, locale=LOCALE, template_env=env, cache_dir=cache_dir)
        == second
    )
    assert len(renderer.calls) == 2


def cached_names(folder: Path) -> list[str]:
    """Cache file names without the digest of the company/account they were drawn for."""
    return sorted(re.sub(r"-[0-9a-f]{10}(\.pdf)$", r"\1", p.name) for p in folder.iterdir())


def cached_file(folder: Path, stem: str) -> Path:
    return next(folder.glob(f"{stem}-*.pdf"))


def test_a_changed_bill_to_or_company_name_is_not_served_stale(
    env: jinja2.Environment, tmp_path: Path, renderer: CountingRenderer
) -> None:
    invoice, company = unsaved_invoice()
    first = cached_invoice_pdf(
        invoice, company, locale=LOCALE, template_env=env, cache_dir=tmp_path
    )
    invoice.billing_account.bill_to = "New address\n1 Other Street"
    second = cached_invoice_pdf(
        invoice, company, locale=LOCALE, template_env=env, cache_dir=tmp_path
    )
    assert second != first and "1 Other Street" in pdf_text(second)
    assert len(list(tmp_path.glob("*.pdf"))) == 1  # the stale drawing is gone
    assert len(renderer.calls) == 2


def test_new_version_drops_older_files_only(
    env: jinja2.Environment, tmp_path: Path, renderer: CountingRenderer
) -> None:
    invoice, company = unsaved_invoice(version=2)
    other, _ = unsaved_invoice(number="INV-1002", version=1)
    for locale in (LOCALE, "de_DE"):
        cached_invoice_pdf(invoice, company, locale=locale, template_env=env, cache_dir=tmp_path)
    cached_invoice_pdf(other, company, locale=LOCALE, template_env=env, cache_dir=tmp_path)
    newer = tmp_path / f"{invoice.public_id}-v5-{LOCALE}.pdf"  # written by a newer request
    newer.write_bytes(b"%PDF- newer")

    invoice.version = 3
    cached_invoice_pdf(invoice, company, locale=LOCALE, template_env=env, cache_dir=tmp_path)
    assert cached_names(tmp_path) == sorted(
        [
            f"{invoice.public_id}-v3-{LOCALE}.pdf",
            newer.name,
            f"{other.public_id}-v1-{LOCALE}.pdf",  # another invoice's file stays
        ]
    )


def test_cache_keeps_locales_and_invoices_apart(
    env: jinja2.Environment, tmp_path: Path, renderer: CountingRenderer
) -> None:
    invoice, company = unsaved_invoice()
    other, _ = unsaved_invoice(number="INV-1002")
    english = cached_invoice_pdf(
        invoice, company, locale=LOCALE, template_env=env, cache_dir=tmp_path
    )
    german = cached_invoice_pdf(
        invoice, company, locale="de_DE", template_env=env, cache_dir=tmp_path
    )
    cached_invoice_pdf(other, company, locale=LOCALE, template_env=env, cache_dir=tmp_path)
    assert len(renderer.calls) == 3
    assert "$801.79" in pdf_text(english)
    assert "801,79 $" in pdf_text(german).replace("\xa0", " ")
    assert len(list(tmp_path.glob("*.pdf"))) == 3


def test_stored_invoice_and_its_version_bump(
    db: Session, env: jinja2.Environment, tmp_path: Path, renderer: CountingRenderer
) -> None:
    """A stored invoice: lines and balance from the database, version bumped by an update."""
    company = factories.make_company(db, "Initrode Ltd")
    stored = factories.make_invoice(
        db,
        company.billing_accounts[0],
        "1500.00",
        balance="1000.00",
        lines=[("Managed hosting, monthly", "1250.00"), ("Support hours", "250.00")],
    )
    with tenancy.system(db):  # the test's own company, read back as stored
        invoice = db.scalars(select(Invoice).where(Invoice.id == stored.id)).one()
        first = cached_invoice_pdf(
            invoice, company, locale=LOCALE, template_env=env, cache_dir=tmp_path
        )
        text = pdf_text(first)
        assert invoice.lines
        for line in invoice.lines:
            assert line.description in text
        assert company.name in text
        assert format_money(invoice.total, invoice.currency, LOCALE) in text
        assert format_money(invoice.balance_due, invoice.currency, LOCALE) in text

        version = invoice.version
        invoice.amount_paid = invoice.total  # paid in full: the row, so its version, changes
        db.flush()
        assert invoice.version == version + 1 and invoice.balance_due == 0
        second = cached_invoice_pdf(
            invoice, company, locale=LOCALE, template_env=env, cache_dir=tmp_path
        )
    assert second != first
    assert re.search(
        r"Balance due\s*" + re.escape(format_money(0, invoice.currency, LOCALE)), pdf_text(second)
    )
    assert cached_names(tmp_path) == [f"{invoice.public_id}-v{version + 1}-{LOCALE}.pdf"]
    assert len(renderer.calls) == 2


@pytest.mark.parametrize("locale", ["../../etc/passwd", "en US", "", "en_US/x"])
def test_cache_refuses_odd_locales(
    env: jinja2.Environment, tmp_path: Path, renderer: CountingRenderer, locale: str
) -> None:
    invoice, company = unsaved_invoice()
    with pytest.raises(ValueError, match="locale"):
        cached_invoice_pdf(invoice, company, locale=locale, template_env=env, cache_dir=tmp_path)
    assert renderer.calls == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("INV-1001", "invoice-INV-1001.pdf"),
        ("INV/2025 007", "invoice-INV-2025-007.pdf"),
        ("../../etc/passwd", "invoice-etc-passwd.pdf"),
        ('A"B;C\r\nD', "invoice-A-B-C-D.pdf"),
        ("Fäktura №5", "invoice-F-ktura-5.pdf"),
        ("", "invoice.pdf"),
        ("///", "invoice.pdf"),
    ],
)
def test_pdf_filename(number: str, expected: str) -> None:
    invoice, _ = unsaved_invoice(number=number, lines=0)
    name = pdf_filename(invoice)
    assert name == expected
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name)
