"""The statement's three files (PDF, XLSX, CSV) from the same data: each read back (pypdf,
openpyxl, csv) says the same figures; the PDF numbers its pages and repeats the table's heading,
the workbook's cells are typed, the CSV is RFC 4180 with a BOM and no live formulas; Arabic is
right to left and shaped. No database, no app: the labels follow the statement's locale."""

from __future__ import annotations

import csv
import io
import unicodedata
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import arabic_reshaper
import openpyxl
import pypdf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import statement_data
from portal.models.statement import StatementFormat
from portal.services.money import format_money
from portal.services.statements import render_csv, render_pdf, render_xlsx
from portal.services.statements.data import Aging, Line, LineKind, Section, StatementData
from portal.services.statements.render import RENDERERS, filename
from portal.services.statements.render_xlsx import money_format, sheet_name

TRICKY = (
    'Comma, "quoted" text',
    "two\nlines",
    '=HYPERLINK("http://x")',
    "+1 555",
    "-5",
    "@SUM(A1)",
    "\tTabbed",
    "Müller & Søn <b>",
    "شركة الأفق",
)


def render(module: Any, data: StatementData) -> tuple[bytes, list[int]]:
    out = io.BytesIO()
    calls: list[int] = []
    module.render(data, out, calls.append)
    return out.getvalue(), calls


def two_sections(lines: int = 40, locale: str = "en_US") -> StatementData:
    return statement_data.statement(
        statement_data.section(lines, descriptions=TRICKY),
        statement_data.section(
            5, currency="JPY", opening=0, number="ACC-2002", name="Tokyo office"
        ),
        locale=locale,
    )


def expected(data: StatementData) -> list[dict[str, Any]]:
    """What each section should show, in minor units, from a fresh copy of its lines."""
    figures = []
    for section in data.sections:
        again = statement_data.lines(
            section.line_count,
            section.opening,
            descriptions=TRICKY if section.currency == "USD" else (),
        )
        figures.append(
            {
                "currency": section.currency,
                "opening": section.opening,
                "lines": [(line.debit, line.credit, line.balance) for line in again],
                "totals": (section.total_debit, section.total_credit),
                "closing": section.closing,
                "aging": [*section.aging.buckets(), section.aging.total],
            }
        )
    return figures


def minor(value: Decimal | str | float | None, currency: str) -> int:
    if value in (None, ""):
        return 0
    places = 0 if currency == "JPY" else 2
    return int(Decimal(str(value)).scaleb(places))


def csv_figures(body: bytes) -> list[dict[str, Any]]:
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    sections: dict[str, dict[str, Any]] = {}
    for number, _name, currency, _day, kind, _ref, _text, debit, credit, balance in rows[1:]:
        section = sections.setdefault(number, {"currency": currency, "lines": [], "aging": []})
        if kind == "Opening balance":
            section["opening"] = minor(balance, currency)
        elif kind == "Closing balance":
            section["closing"] = minor(balance, currency)
            section["totals"] = (minor(debit, currency), minor(credit, currency))
        elif kind == "Aging":
            section["aging"].append(minor(balance, currency))
        else:
            section["lines"].append(
                (minor(debit, currency), minor(credit, currency), minor(balance, currency))
            )
    return list(sections.values())


def xlsx_figures(body: bytes) -> list[dict[str, Any]]:
    book = openpyxl.load_workbook(io.BytesIO(body))
    figures = []
    for sheet in book.worksheets[1:]:
        currency = str(sheet["D1"].value).split(": ")[1]
        rows = list(sheet.iter_rows(values_only=True))
        body_rows = []
        for row in rows[4:]:
            if not row or row[0] is None:
                break
            body_rows.append(row)
        after = rows[4 + len(body_rows) :]
        totals = after[1]
        closing = after[2]
        aging = after[6][:6]
        figures.append(
            {
                "currency": currency,
                "opening": minor(rows[1][6], currency),
                "lines": [
                    (minor(r[4], currency), minor(r[5], currency), minor(r[6], currency))
                    for r in body_rows
                ],
                "totals": (minor(totals[4], currency), minor(totals[5], currency)),
                "closing": minor(closing[6], currency),
                "aging": [minor(v, currency) for v in aging],
            }
        )
    return figures


def pdf_text(body: bytes) -> list[str]:
    return [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(body)).pages]


def assert_in_order(text: str, items: list[str]) -> None:
    at = 0
    for item in items:
        found = text.find(item, at)
        assert found >= 0, f"{item!r} missing after position {at}"
        at = found + len(item)


def test_the_three_files_say_the_same_figures() -> None:
    data = two_sections()
    want = expected(data)
    csv_body, _ = render(render_csv, two_sections())
    xlsx_body, _ = render(render_xlsx, two_sections())
    pdf_body, _ = render(render_pdf, two_sections())
    assert csv_figures(csv_body) == want
    assert xlsx_figures(xlsx_body) == want
    text = "\n".join(pdf_text(pdf_body)).replace("\xa0", " ")
    for figures in want:
        currency = figures["currency"]

        def money(value: int, currency: str = currency) -> str:
            return format_money(value, currency, "en_US").replace("\xa0", " ")

        shown = [money(figures["opening"])]
        for debit, credit, balance in figures["lines"]:
            shown += [money(v) for v in (debit, credit) if v] + [money(balance)]
        shown += [money(v) for v in figures["totals"]] + [money(figures["closing"])]
        shown += [money(v) for v in figures["aging"]]
        assert_in_order(text, shown)
        text = text[text.find(money(figures["closing"])) :]


def test_the_pdf_numbers_its_pages_and_repeats_the_heading_on_each() -> None:
    body, calls = render(render_pdf, two_sections(lines=120))
    pages = pdf_text(body)
    total = len(pages)
    assert total >= 3
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {total}" in text
        if "INV-" in text:  # lines on this page: the table's heading row above them
            assert "Charges" in text and "Payments and" in text and "Balance" in text
        assert "Acme Industrial Supply" in text and "stm_7K2Q9XJ4" in text
    first = pages[0]
    for shown in ("Statement of account", "Billing Portal", "12 Harbour Road", "Springfield"):
        assert shown in first
    assert "January 1, 2026 – March 31, 2026" in first  # noqa: RUF001
    assert "Main account (ACC-1001)" in first and "Currency: USD" in first
    assert "Opening balance" in first and "Closing balance" in "".join(pages[-2:])
    assert "=HYPERLINK" in "".join(pages)  # text, drawn as it is
    assert calls == [125]


def test_the_workbook_has_typed_cells_a_frozen_heading_and_a_filter() -> None:
    body, _ = render(render_xlsx, two_sections(lines=30))
    book = openpyxl.load_workbook(io.BytesIO(body))
    assert book.sheetnames == ["Summary", "ACC-1001 USD", "ACC-2002 JPY"]
    summary = book["Summary"]
    assert summary["A1"].value == "Statement of account"
    heading = [c.value for c in summary[10]]
    assert heading[:7] == [
        "Account number",
        "Account",
        "Currency",
        "Opening balance",
        "Charges",
        "Payments and credits",
        "Closing balance",
    ]
    assert summary["D11"].number_format == '#,##0.00 "USD"'
    assert summary["D11"].value == Decimal("1234.5") or summary["D11"].value == 1234.5
    assert summary["D12"].number_format == '#,##0 "JPY"'

    usd = book["ACC-1001 USD"]
    assert usd.freeze_panes == "A5"
    assert usd.auto_filter.ref == "A4:G34"
    assert [c.value for c in usd[4]] == [
        "Date",
        "Type",
        "Reference",
        "Description",
        "Charges",
        "Payments and credits",
        "Balance",
    ]
    first = usd[5]
    assert isinstance(first[0].value, datetime) and first[0].value.date() == date(2026, 1, 1)
    assert first[0].is_date and first[0].number_format == "yyyy-mm-dd"
    assert first[4].data_type == "n" and first[4].number_format == '#,##0.00 "USD"'
    assert first[6].data_type == "n"
    formula = usd.cell(row=7, column=4)  # the third line's description
    assert formula.value == '=HYPERLINK("http://x")' and formula.data_type == "s"
    assert usd.cell(row=6, column=4).value == "two\nlines"
    assert book["ACC-2002 JPY"].auto_filter.ref == "A4:G9"


def test_the_csv_has_a_bom_crlf_quoting_and_no_formulas() -> None:
    body, _ = render(render_csv, two_sections(lines=12))
    assert body.startswith(b"\xef\xbb\xbf")
    fields = body.replace(b'"two\nlines"', b"")  # the line break inside a field is kept
    assert fields.count(b"\n") == fields.count(b"\r\n") == 1 + (1 + 12 + 1 + 6) + (1 + 5 + 1 + 6)
    assert b'"Comma, ""quoted"" text"' in body
    assert b'"two\r\nlines"' not in body and b'"two\nlines"' in body
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    assert rows[0] == [
        "Account number",
        "Account",
        "Currency",
        "Date",
        "Type",
        "Reference",
        "Description",
        "Charges",
        "Payments and credits",
        "Balance",
    ]
    assert rows[1] == [
        "ACC-1001", "Main account", "USD", "2026-01-01", "Opening balance", "", "", "", "",
        "1234.50",
    ]  # fmt: skip
    descriptions = [row[6] for row in rows[2:14]]
    assert descriptions[:9] == [
        'Comma, "quoted" text',
        "two\nlines",
        '\'=HYPERLINK("http://x")',
        "'+1 555",
        "'-5",
        "'@SUM(A1)",
        "'\tTabbed",
        "Müller & Søn <b>",
        "شركة الأفق",
    ]
    negative = [row[9] for row in rows[1:] if row[9].startswith("-")]
    assert negative, "a negative balance is a number, not neutralised text"
    jpy = [row for row in rows if row[2] == "JPY"]
    assert jpy[0][9] == "0" and all("." not in row[9] for row in jpy)
    assert [row[6] for row in jpy if row[4] == "Aging"] == [
        "Current",
        "1–30 days",  # noqa: RUF001
        "31–60 days",  # noqa: RUF001
        "61–90 days",  # noqa: RUF001
        "90+ days",
        "Total",
    ]


@pytest.mark.parametrize("module", [render_pdf, render_xlsx, render_csv])
def test_progress_every_250_lines_and_at_the_end(module: Any) -> None:
    data = statement_data.statement(
        statement_data.section(400), statement_data.section(200, number="ACC-2")
    )
    _, calls = render(module, data)
    assert calls[-1] == 600
    if module is render_pdf:  # counted as pages are drawn: the first page past each 250
        assert len(calls) == 3 and 250 <= calls[0] < 300 and 500 <= calls[1] < 550
    else:
        assert calls == [250, 500, 600]


def test_the_lines_are_read_once_from_a_generator() -> None:
    for module in (render_pdf, render_xlsx, render_csv):
        data = statement_data.statement(statement_data.section(30))
        render(module, data)
        assert list(data.sections[0].lines) == []  # consumed


def test_labels_follow_the_statements_language() -> None:
    body, _ = render(render_csv, two_sections(lines=2, locale="de_DE"))
    pdf, _ = render(render_pdf, two_sections(lines=2, locale="de_DE"))
    header = body.decode("utf-8-sig").split("\r\n")[0]
    assert header.startswith("Kontonummer,Konto,Währung,Datum,Art,")
    assert "Anfangssaldo" in body.decode("utf-8-sig")
    text = pdf_text(pdf)[0]
    assert "Kontoauszug" in text and "Seite 1 von 1" in text and "1.234,50" in text


def test_arabic_pdf_is_shaped_and_mirrored() -> None:
    body, calls = render(render_pdf, two_sections(lines=60, locale="ar"))
    assert calls[-1] == 65
    reader = pypdf.PdfReader(io.BytesIO(body))
    text = reader.pages[0].extract_text()
    # arabic-reshaper writes presentation forms; NFKC maps them back to the letters
    assert any("\ufe70" <= ch <= "\ufeff" for ch in text)
    for label in ("كشف حساب", "الرصيد الافتتاحي", "شركة الأفق"):
        shaped = arabic_reshaper.reshape(label)
        assert shaped != label
        assert unicodedata.normalize("NFKC", shaped) == label
    readable = unicodedata.normalize("NFKC", text)
    assert "الرصيد الافتتاحي" in readable or "الافتتاحي" in readable
    # the heading row runs right to left: the date column is at the right, the balance left
    where: dict[str, float] = {}

    def visit(text: str, cm: Any, tm: Any, font: Any, size: Any) -> None:
        normal = unicodedata.normalize("NFKC", text).strip()
        if normal in ("التاريخ", "الرصيد") and normal not in where:
            where[normal] = tm[4]

    reader.pages[1].extract_text(visitor_text=visit)
    assert where["التاريخ"] > where["الرصيد"]


def test_renderers_and_file_names() -> None:
    data = two_sections(lines=1)
    assert {fmt: r.extension for fmt, r in RENDERERS.items()} == {
        StatementFormat.PDF: "pdf",
        StatementFormat.XLSX: "xlsx",
        StatementFormat.CSV: "csv",
    }
    assert RENDERERS[StatementFormat.PDF].content_type == "application/pdf"
    assert filename(data, StatementFormat.XLSX) == "statement-2026-01-01-2026-03-31.xlsx"
    assert filename(data, StatementFormat.CSV) == "statement-2026-01-01-2026-03-31.csv"


def test_sheet_names_are_safe_and_unique() -> None:
    taken: set[str] = set()
    assert sheet_name("Summary", taken) == "Summary"
    assert sheet_name("summary", taken) == "summary (2)"
    long = sheet_name("A/B:C*D?E[F]G\\" + "x" * 40, taken)
    assert long == ("A-B-C-D-E-F-G-" + "x" * 40)[:31]
    again = sheet_name("A/B:C*D?E[F]G\\" + "x" * 40, taken)
    assert len(again) <= 31 and again.endswith(" (2)")
    assert sheet_name("'''", taken) == "Sheet"
    assert money_format("KWD") == '#,##0.000 "KWD"'


# Arbitrary text and amounts: nothing crashes, the CSV gives back what it was given.

_text = st.text(
    st.characters(blacklist_categories=("Cs",)),
    max_size=40,
) | st.sampled_from(TRICKY)
_amount = st.integers(min_value=0, max_value=99_999_999_999_999)


@st.composite
def _statements(draw: st.DrawFn) -> tuple[StatementData, list[Line]]:
    currency = draw(st.sampled_from(["USD", "JPY", "KWD", "EUR"]))
    opening = draw(st.integers(min_value=-(10**12), max_value=10**12))
    lines: list[Line] = []
    balance = opening
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        kind = draw(st.sampled_from(list(LineKind)))
        amount = draw(_amount)
        debit, credit = (amount, 0) if kind is LineKind.INVOICE else (0, amount)
        balance += debit - credit
        lines.append(Line(date(2026, 2, 1), kind, draw(_text), draw(_text), debit, credit, balance))
    section = Section(
        account_name=draw(_text),
        account_number=draw(_text),
        currency=currency,
        opening=opening,
        closing=balance,
        total_debit=sum(line.debit for line in lines),
        total_credit=sum(line.credit for line in lines),
        line_count=len(lines),
        lines=iter(lines),
        aging=Aging(current=draw(_amount), over_90=draw(_amount)),
    )
    data = StatementData(
        reference="stm_X",
        issuer="Billing Portal",
        company_name=draw(_text),
        company_address=draw(_text),
        start=date(2026, 1, 1),
        end=date(2026, 3, 31),
        generated_at=datetime(2026, 4, 1, tzinfo=UTC),
        locale=draw(st.sampled_from(["en_US", "de_DE", "ar"])),
        sections=[section],
    )
    return data, lines


def _again(data: StatementData, lines: list[Line]) -> StatementData:
    (section,) = data.sections
    copy = Section(**{**section.__dict__, "lines": iter(lines)})
    return StatementData(**{**data.__dict__, "sections": [copy]})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_statements())
def test_any_text_and_amounts_round_trip_through_the_csv(
    drawn: tuple[StatementData, list[Line]],
) -> None:
    data, lines = drawn
    body, _ = render(render_csv, data)
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    (section,) = data.sections
    body_rows = rows[2 : 2 + len(lines)]
    assert len(rows) == 1 + 1 + len(lines) + 1 + 6
    for row, line in zip(body_rows, lines, strict=True):
        assert row[5] == render_csv.neutralise(line.reference)
        assert row[6] == render_csv.neutralise(line.description)
        assert row[0] == render_csv.neutralise(section.account_number)
        assert Decimal(row[9]) == Decimal(line.balance).scaleb(-_places(section.currency))
        assert not row[5].startswith(render_csv.FORMULA_START)
        assert not row[6].startswith(render_csv.FORMULA_START)
    closing = rows[2 + len(lines)]
    assert Decimal(closing[9]) == Decimal(section.closing).scaleb(-_places(section.currency))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_statements())
def test_any_text_and_amounts_render_as_pdf_and_xlsx(
    drawn: tuple[StatementData, list[Line]],
) -> None:
    data, lines = drawn
    pdf, _ = render(render_pdf, data)
    assert pdf.startswith(b"%PDF") and len(pypdf.PdfReader(io.BytesIO(pdf)).pages) >= 1
    xlsx, _ = render(render_xlsx, _again(data, lines))
    book = openpyxl.load_workbook(io.BytesIO(xlsx))
    sheet = book.worksheets[1]
    for row, line in zip(sheet.iter_rows(min_row=5, max_row=4 + len(lines)), lines, strict=True):
        assert row[6].value == pytest.approx(
            float(Decimal(line.balance).scaleb(-_places(data.sections[0].currency)))
        )
        assert row[3].data_type == "s" or row[3].value is None


def _places(currency: str) -> int:
    return {"JPY": 0, "KWD": 3}.get(currency, 2)
