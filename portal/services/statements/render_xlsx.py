"""The statement as an Excel workbook, streamed (openpyxl's write-only mode: rows go to a
temporary file as they are appended, so memory does not grow with the lines).

A summary sheet (the header, then one row per section: opening, charges, credits, closing and
the aging buckets), then one sheet per section: its account and opening balance, the lines
table (a frozen heading row and an autofilter over it), totals, closing balance and aging.
Cells are typed: dates are dates, amounts numbers in major units shown with the currency's
decimals and code (`#,##0.00 "USD"`); text is always text, never a formula.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Any, BinaryIO

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from portal.services.statements.data import Progress, Section, StatementData
from portal.services.statements.labels import aging_values, decimal, is_rtl, labels, precision

PROGRESS_EVERY = 250
DATE_FORMAT = "yyyy-mm-dd"
SHEET_NAME_MAX = 31
_SHEET_UNSAFE = re.compile(r"[\[\]:*?/\\]")
_BOLD = Font(bold=True)
_WRAP = Alignment(wrap_text=True, vertical="top")
# Widths of the lines table's columns: date, type, reference, description, three amounts.
_LINE_WIDTHS = (12, 14, 18, 40, 18, 18, 18)
_SUMMARY_WIDTHS = (16, 28, 10, 18, 18, 18, 18, 16, 16, 16, 16, 16, 16)


def money_format(currency: str) -> str:
    """`#,##0.00 "USD"`: the currency's decimals and its code."""
    places = precision(currency)
    quoted = currency.replace('"', "")
    return f'#,##0{"." + "0" * places if places else ""} "{quoted}"'


def clean(text: str) -> str:
    """What a cell may hold: XML has no place for most control characters."""
    return str(ILLEGAL_CHARACTERS_RE.sub("", text))


def sheet_name(wanted: str, taken: set[str]) -> str:
    """A name Excel accepts (no []:*?/\\, not quoted, at most 31 characters), unique in `taken`
    regardless of case; `taken` is updated."""
    base = _SHEET_UNSAFE.sub("-", clean(wanted)).strip().strip("'").strip() or "Sheet"
    name = base[:SHEET_NAME_MAX]
    number = 2
    while name.casefold() in taken:
        suffix = f" ({number})"
        name = base[: SHEET_NAME_MAX - len(suffix)].rstrip() + suffix
        number += 1
    taken.add(name.casefold())
    return name


class _Cells:
    """Typed cells for one sheet."""

    def __init__(self, sheet: WriteOnlyWorksheet) -> None:
        self.sheet = sheet

    def text(self, value: str, *, bold: bool = False, wrap: bool = False) -> WriteOnlyCell:
        cell = WriteOnlyCell(self.sheet, value=clean(value))
        cell.data_type = "s"  # "=SUM(...)" in a description stays text
        if bold:
            cell.font = _BOLD
        if wrap:
            cell.alignment = _WRAP
        return cell

    def day(self, value: date) -> WriteOnlyCell:
        cell = WriteOnlyCell(self.sheet, value=value)
        cell.number_format = DATE_FORMAT
        return cell

    def money(self, minor: int, currency: str, fmt: str, *, bold: bool = False) -> WriteOnlyCell:
        cell = WriteOnlyCell(self.sheet, value=decimal(minor, currency))
        cell.number_format = fmt
        if bold:
            cell.font = _BOLD
        return cell


def _widths(sheet: WriteOnlyWorksheet, widths: Iterable[int]) -> None:
    for index, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = width


def render(data: StatementData, out: BinaryIO, progress: Progress) -> None:
    names = labels(data.locale)
    book = Workbook(write_only=True)
    taken: set[str] = set()
    summary = book.create_sheet(sheet_name(names.summary, taken))
    if is_rtl(data):
        summary.sheet_view.rightToLeft = True
    _summary(summary, data, names)
    written = 0
    for section in data.sections:
        sheet = book.create_sheet(sheet_name(f"{section.account_number} {section.currency}", taken))
        if is_rtl(data):
            sheet.sheet_view.rightToLeft = True
        written = _section(sheet, section, data, names, written, progress)
    book.save(out)
    progress(written)


def _summary(sheet: WriteOnlyWorksheet, data: StatementData, names: Any) -> None:
    _widths(sheet, _SUMMARY_WIDTHS)
    cells = _Cells(sheet)
    sheet.append([cells.text(names.title, bold=True)])
    sheet.append([cells.text(names.issuer), cells.text(data.issuer)])
    sheet.append([cells.text(names.customer), cells.text(data.company_name)])
    for line in data.company_address.splitlines():
        if line.strip():
            sheet.append([None, cells.text(line.strip())])
    sheet.append([cells.text(names.period), cells.day(data.start), cells.day(data.end)])
    generated = WriteOnlyCell(sheet, value=data.generated_at.replace(tzinfo=None))
    generated.number_format = "yyyy-mm-dd hh:mm"
    sheet.append([cells.text(names.generated), generated, cells.text("UTC")])
    sheet.append([cells.text(names.reference), cells.text(data.reference)])
    sheet.append([])
    heading = (
        names.account_number,
        names.account,
        names.currency,
        names.opening,
        names.debit,
        names.credit,
        names.closing,
        *names.buckets,
        f"{names.aging}: {names.total}",
    )
    sheet.append([cells.text(value, bold=True) for value in heading])
    for section in data.sections:
        currency = section.currency
        fmt = money_format(currency)
        sheet.append(
            [
                cells.text(section.account_number),
                cells.text(section.account_name),
                cells.text(currency),
                cells.money(section.opening, currency, fmt),
                cells.money(section.total_debit, currency, fmt),
                cells.money(section.total_credit, currency, fmt),
                cells.money(section.closing, currency, fmt),
                *(cells.money(value, currency, fmt) for value in aging_values(section.aging)),
            ]
        )


def _section(
    sheet: WriteOnlyWorksheet,
    section: Section,
    data: StatementData,
    names: Any,
    written: int,
    progress: Progress,
) -> int:
    """Appends the section's rows; returns the lines written so far in the statement."""
    heading_row = 4
    # a write-only sheet writes its view and columns before its first row
    sheet.freeze_panes = f"A{heading_row + 1}"
    _widths(sheet, _LINE_WIDTHS)
    cells = _Cells(sheet)
    currency = section.currency
    fmt = money_format(currency)
    sheet.append(
        [
            cells.text(names.account, bold=True),
            cells.text(f"{section.account_name} ({section.account_number})", bold=True),
            None,
            cells.text(f"{names.currency}: {currency}"),
        ]
    )
    sheet.append(
        [
            cells.day(data.start),
            cells.text(names.opening),
            None,
            None,
            None,
            None,
            cells.money(section.opening, currency, fmt, bold=True),
        ]
    )
    sheet.append([])
    sheet.append([cells.text(value, bold=True) for value in names.columns])
    kinds = names.kinds
    places = precision(currency)
    # One set of styled cells for every line: a write-only sheet writes a row as it is
    # appended, so the cells are refilled for the next (a new styled cell per value costs a
    # style lookup each). Text goes as plain values (openpyxl makes them text cells), but for
    # what openpyxl would take for a formula.
    day = cells.day(data.start)
    debit, credit, balance = (cells.money(0, currency, fmt) for _ in range(3))
    reference, description = cells.text(""), cells.text("")

    def text(value: str, cell: WriteOnlyCell) -> str | WriteOnlyCell:
        value = clean(value)
        if not value.startswith("="):
            return value
        cell.value = value
        cell.data_type = "s"
        return cell

    count = 0
    for line in section.lines:
        day.value = line.day
        balance.value = Decimal(line.balance).scaleb(-places)
        row: list[Any] = [
            day,
            kinds[line.kind],
            text(line.reference, reference),
            text(line.description, description),
            None,
            None,
            balance,
        ]
        if line.debit:
            debit.value = Decimal(line.debit).scaleb(-places)
            row[4] = debit
        if line.credit:
            credit.value = Decimal(line.credit).scaleb(-places)
            row[5] = credit
        sheet.append(row)
        count += 1
        written += 1
        if written % PROGRESS_EVERY == 0:
            progress(written)
    last = get_column_letter(len(names.columns))
    sheet.auto_filter.ref = f"A{heading_row}:{last}{heading_row + count}"
    sheet.append([])
    sheet.append(
        [
            None,
            cells.text(names.totals, bold=True),
            None,
            None,
            cells.money(section.total_debit, currency, fmt, bold=True),
            cells.money(section.total_credit, currency, fmt, bold=True),
            None,
        ]
    )
    sheet.append(
        [
            cells.day(data.end),
            cells.text(names.closing, bold=True),
            None,
            None,
            None,
            None,
            cells.money(section.closing, currency, fmt, bold=True),
        ]
    )
    sheet.append([])
    sheet.append([cells.text(names.aging, bold=True)])
    sheet.append([cells.text(value, bold=True) for value in (*names.buckets, names.total)])
    sheet.append([cells.money(value, currency, fmt) for value in aging_values(section.aging)])
    return written
