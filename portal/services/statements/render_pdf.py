"""The statement as a PDF, drawn with ReportLab's platypus (xhtml2pdf, which the invoice uses,
takes ~25 times as long for a table of a thousand rows).

A4 portrait, DejaVu fonts (Debian's fonts-dejavu-core, as the invoice). The header (issuer,
customer and address, period, generated date, statement reference), then per section: the
account and currency, the lines table (opening balance, the lines, totals, closing balance;
its heading row on top of every page) and the aging table. "Page x of y" on every page comes
from a counting canvas: each finished page is kept as its drawing operations and numbered when
the last one is known, so the document is laid out once.

The lines are read from the section's generator only as pages are laid out, at most CHUNK rows
ahead (_PagedRows), and cells are plain strings wrapped here to the column's width, not
Paragraphs. What still grows with the lines is the drawn pages: ReportLab writes the file when
it is complete, and the counting canvas keeps each page until the count is known (about 1.5 KB
per line). In Arabic the columns run right to left, text is right-aligned and every string is
shaped (arabic-reshaper) and put in visual order (xhtml2pdf's implementation of the Unicode
bidirectional algorithm); any Arabic in another language's statement is shaped too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, date
from itertools import islice
from typing import Any, BinaryIO
from xml.sax.saxutils import escape

import arabic_reshaper
from babel.dates import format_date, format_datetime
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT, TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Spacer, Table
from xhtml2pdf.bidi import get_display, needs_bidi

from portal.services.invoice_pdf import FONT_BOLD, FONT_REGULAR
from portal.services.money import format_money
from portal.services.statements.data import Progress, Section, StatementData
from portal.services.statements.labels import Labels, aging_values, is_rtl, labels, page_of, period

PROGRESS_EVERY = 250
CHUNK = 100  # rows taken for a page: more than a page holds (at most ~55 one-line rows)
REGULAR = "DejaVuSans"
BOLD = "DejaVuSans-Bold"
PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 15 * mm
TOP = 22 * mm  # room for the running header
BOTTOM = 18 * mm  # room for "Page x of y"
FRAME_WIDTH = PAGE_WIDTH - 2 * MARGIN
SIZE = 8  # the tables' font size
PADDING = 3
# The lines table's columns in reading order: date, type, reference, description, charges,
# payments/credits, balance. The description takes what the others leave.
_FIXED = (58.0, 56.0, 70.0, 0.0, 76.0, 76.0, 78.0)
WIDTHS = tuple(w or FRAME_WIDTH - sum(_FIXED) for w in _FIXED)
AMOUNT_COLUMNS = (4, 5, 6)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_GRID = colors.HexColor("#c8c8c8")
_SHADE = colors.HexColor("#eeeeee")


def _fonts() -> None:
    """DejaVu, registered once per process."""
    if REGULAR not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(REGULAR, str(FONT_REGULAR)))
        pdfmetrics.registerFont(TTFont(BOLD, str(FONT_BOLD)))
        pdfmetrics.registerFontFamily(REGULAR, normal=REGULAR, bold=BOLD)


class _Script:
    """Strings as they are drawn: one line, shaped and in visual order where needed."""

    def __init__(self, rtl: bool) -> None:
        self.rtl = rtl
        self.base = "R" if rtl else "L"

    def flat(self, text: str) -> str:
        """`text` on one line: line breaks, tabs and other control characters become spaces."""
        return str(_CONTROL.sub(" ", text).strip())

    def _base(self, text: str, data: bool) -> str | None:
        """The direction `text` is laid out in, or "" when it is drawn as it is. The page's own
        words, dates and amounts take the page's; names, references and descriptions (data)
        take their first strong character's, so "=SUM(A1)" stays as typed on an Arabic page."""
        if needs_bidi(text):
            return None if data else self.base
        return self.base if self.rtl and not data else ""

    def visual(self, text: str, *, data: bool = False) -> str:
        base = self._base(text, data)
        if base == "":
            return text
        return str(get_display(arabic_reshaper.reshape(text), base_dir=base))

    def wrap(
        self,
        text: str,
        width: float,
        font: str = REGULAR,
        size: float = SIZE,
        *,
        data: bool = False,
    ) -> str:
        """`text` broken into lines that fit `width`, each drawn as it reads."""
        text = self.flat(text)
        if not text:
            return ""
        base = self._base(text, data)
        shaped = base != ""
        if shaped:
            text = arabic_reshaper.reshape(text)
        if pdfmetrics.stringWidth(text, font, size) <= width - 2 * PADDING:
            lines = [text]
        else:
            lines = simpleSplit(text, font, size, width - 2 * PADDING) or [text]
        if shaped:
            lines = [get_display(line, base_dir=base) for line in lines]
        return "\n".join(lines)


def _ordered(row: list[Any], rtl: bool) -> list[Any]:
    return row[::-1] if rtl else row


class _Progress:
    """Lines laid out so far, reported each time another PROGRESS_EVERY are placed."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.written = 0

    def add(self, lines: int) -> None:
        before, self.written = self.written, self.written + lines
        if self.written // PROGRESS_EVERY > before // PROGRESS_EVERY:
            self.progress(self.written)


# A row of the lines table: what it is ("opening", "line", "totals", "closing") and its cells.
Row = tuple[str, list[str]]
LINE = "line"


class _PagedRows(Flowable):
    """The lines table, a page at a time: it takes rows from the section's generator only as
    the page being laid out needs them, so no more than CHUNK rows are held at once, and each
    page is a small table of its own with the heading row on top (what LongTable's repeated
    heading row looks like, without a table of every line: a big table is split again and
    again, which grows faster than its rows).

    It never fits whole, so the document asks it to split: the page's part, then a new
    _PagedRows with the rows that did not fit."""

    def __init__(
        self,
        rows: Iterator[Row],
        make: Callable[[list[Row]], Table],
        tracker: _Progress,
        leftover: list[Row] | None = None,
    ) -> None:
        super().__init__()
        self.rows = rows
        self.make = make
        self.tracker = tracker
        self.leftover = leftover or []

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return (available_width, available_height + 1)

    def split(self, available_width: float, available_height: float) -> list[Flowable]:
        chunk = self.leftover
        chunk.extend(islice(self.rows, CHUNK + 1 - len(chunk)))
        more = len(chunk) > CHUNK  # one row past the chunk says whether the generator is done
        rest = chunk[CHUNK:]
        chunk = chunk[:CHUNK]
        table = self.make(chunk)
        _width, height = table.wrap(available_width, available_height)
        if height <= available_height:
            fitted, parts = len(chunk), [table]
        else:
            parts = table.split(available_width, available_height)
            if not parts:  # not even a row fits: the next page, with these rows kept
                self.leftover = chunk + rest
                return []
            fitted = len(parts[0]._cellvalues) - 1  # minus the heading row
            parts = parts[:1]
        self.tracker.add(sum(1 for kind, _cells in chunk[:fitted] if kind == LINE))
        leftover = chunk[fitted:] + rest
        if leftover or more:
            parts.append(_PagedRows(self.rows, self.make, self.tracker, leftover))
        return parts


def _canvas_class(locale: str, script: _Script, running: str) -> type[Canvas]:
    """A canvas that keeps every page and numbers them all when the document is saved."""

    class NumberedCanvas(Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            pages = len(self._pages)
            for number, state in enumerate(self._pages, start=1):
                self.__dict__.update(state)
                self._decorate(number, pages)
                Canvas.showPage(self)
            self._pages = []
            Canvas.save(self)

        def _decorate(self, number: int, pages: int) -> None:
            self.saveState()
            self.setFont(REGULAR, 8)
            self.setFillColor(colors.HexColor("#555555"))
            footer = script.visual(page_of(locale, number, pages))
            self.drawCentredString(PAGE_WIDTH / 2, 10 * mm, footer)
            head = script.visual(running)
            if script.rtl:
                self.drawRightString(PAGE_WIDTH - MARGIN, PAGE_HEIGHT - 12 * mm, head)
            else:
                self.drawString(MARGIN, PAGE_HEIGHT - 12 * mm, head)
            self.restoreState()

    return NumberedCanvas


def render(data: StatementData, out: BinaryIO, progress: Progress) -> None:
    _fonts()
    rtl = is_rtl(data)
    script = _Script(rtl)
    names = labels(data.locale)
    tracker = _Progress(progress)
    running = script.flat(
        f"{data.issuer} · {data.company_name} · {names.reference}: {data.reference}"
    )

    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=TOP,
        bottomMargin=BOTTOM,
        title=f"{names.title} {data.reference}",
        author=data.issuer,
        invariant=1,
    )
    story: list[Flowable] = [*_header(data, names, script)]
    for section in data.sections:
        story += _section(section, data, names, script, tracker)
    doc.build(story, canvasmaker=_canvas_class(data.locale, script, running))
    progress(tracker.written)


def _paragraph_style(rtl: bool, *, size: float = 9, bold: bool = False) -> ParagraphStyle:
    return ParagraphStyle(
        f"statement-{size}-{bold}-{rtl}",
        fontName=BOLD if bold else REGULAR,
        fontSize=size,
        leading=size * 1.3,
        alignment=TA_RIGHT if rtl else TA_LEFT,
    )


def _header(data: StatementData, names: Labels, script: _Script) -> Iterator[Flowable]:
    locale = data.locale

    def day(value: date) -> str:
        return format_date(value, format="long", locale=locale)

    def para(text: str, style: ParagraphStyle) -> Paragraph:
        return Paragraph(escape(script.visual(script.flat(text))), style)

    yield para(names.title, _paragraph_style(script.rtl, size=16, bold=True))
    yield Spacer(1, 4 * mm)
    address = [line for line in data.company_address.splitlines() if line.strip()]
    rows = [
        (names.issuer, data.issuer),
        (names.customer, data.company_name),
        *(("", line) for line in address),
        (names.period, period(locale, day(data.start), day(data.end))),
        (
            names.generated,
            format_datetime(data.generated_at, format="medium", tzinfo=UTC, locale=locale) + " UTC",
        ),
        (names.reference, data.reference),
    ]
    widths = [40 * mm, FRAME_WIDTH - 40 * mm]
    cells = [
        _ordered(
            [
                script.wrap(label, widths[0], BOLD, 9),
                script.wrap(value, widths[1], size=9, data=True),
            ],
            script.rtl,
        )
        for label, value in rows
    ]
    table = Table(
        cells, colWidths=_ordered(widths, script.rtl), hAlign="RIGHT" if script.rtl else "LEFT"
    )
    label_column = 1 if script.rtl else 0
    table.setStyle(
        [
            ("FONT", (0, 0), (-1, -1), REGULAR, 9),
            ("FONT", (label_column, 0), (label_column, -1), BOLD, 9),
            ("ALIGN", (0, 0), (-1, -1), "RIGHT" if script.rtl else "LEFT"),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), PADDING),
            ("RIGHTPADDING", (0, 0), (-1, -1), PADDING),
            ("TOPPADDING", (0, 0), (-1, -1), 1),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
        ]
    )
    yield table


def _section(
    section: Section,
    data: StatementData,
    names: Labels,
    script: _Script,
    tracker: _Progress,
) -> list[Flowable]:
    rtl = script.rtl
    locale = data.locale
    currency = section.currency

    def money(minor: int) -> str:
        return script.visual(format_money(minor, currency, locale))

    def day(value: date) -> str:
        return script.visual(format_date(value, format="medium", locale=locale))

    heading = script.flat(
        f"{names.account}: {section.account_name} ({section.account_number}) · "
        f"{names.currency}: {currency}"
    )
    story: list[Flowable] = [
        Spacer(1, 6 * mm),
        Paragraph(escape(script.visual(heading)), _paragraph_style(rtl, size=11, bold=True)),
        Spacer(1, 2 * mm),
    ]

    widths = list(WIDTHS)
    wrap = script.wrap
    kinds = {kind: wrap(name, widths[1]) for kind, name in names.kinds.items()}
    label_width = widths[1] + widths[2] + widths[3]

    def total_row(day_text: str, label: str, debit: str, credit: str, balance: str) -> list[Any]:
        """Opening, totals or closing: the label spans type to description, and a span shows
        its first cell as drawn (the description's in Arabic)."""
        row: list[Any] = [day_text, "", "", "", debit, credit, balance]
        row[3 if rtl else 1] = wrap(label, label_width, BOLD)
        return _ordered(row, rtl)

    heading_row = _ordered(
        [wrap(title, widths[i], BOLD) for i, title in enumerate(names.columns)], rtl
    )
    ref_width, description_width = widths[2], widths[3]

    def rows() -> Iterator[Row]:
        """The table's rows, each line formatted only when the page reaches it."""
        yield "opening", total_row(day(data.start), names.opening, "", "", money(section.opening))
        for line in section.lines:
            row = [
                day(line.day),
                kinds[line.kind],
                wrap(line.reference, ref_width, data=True),
                wrap(line.description, description_width, data=True),
                money(line.debit) if line.debit else "",
                money(line.credit) if line.credit else "",
                money(line.balance),
            ]
            yield LINE, row[::-1] if rtl else row
        yield (
            "totals",
            total_row(
                "", names.totals, money(section.total_debit), money(section.total_credit), ""
            ),
        )
        yield "closing", total_row(day(data.end), names.closing, "", "", money(section.closing))

    def col(index: int) -> int:
        """A column of the reading order as drawn."""
        return len(widths) - 1 - index if rtl else index

    text_align = "RIGHT" if rtl else "LEFT"
    amount_align = "LEFT" if rtl else "RIGHT"
    label_from, label_to = min(col(1), col(3)), max(col(1), col(3))
    base_style: list[tuple[Any, ...]] = [
        ("FONT", (0, 0), (-1, -1), REGULAR, SIZE),
        ("LEADING", (0, 0), (-1, -1), SIZE * 1.2),
        ("FONT", (0, 0), (-1, 0), BOLD, SIZE),
        ("BACKGROUND", (0, 0), (-1, 0), _SHADE),
        ("ALIGN", (0, 0), (-1, -1), text_align),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, _GRID),
        ("LEFTPADDING", (0, 0), (-1, -1), PADDING),
        ("RIGHTPADDING", (0, 0), (-1, -1), PADDING),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        *(("ALIGN", (col(i), 0), (col(i), -1), amount_align) for i in AMOUNT_COLUMNS),
    ]
    column_widths = _ordered(widths, rtl)

    def make(chunk: list[Row]) -> Table:
        """One page's table: the heading row, then `chunk`."""
        style = list(base_style)
        for index, (kind, _cells) in enumerate(chunk, start=1):
            if kind != LINE:  # opening, totals, closing: bold, the label spanning 3 columns
                style.append(("FONT", (0, index), (-1, index), BOLD, SIZE))
                style.append(("SPAN", (label_from, index), (label_to, index)))
                if kind == "closing":
                    style.append(("BACKGROUND", (0, index), (-1, index), _SHADE))
        return Table(
            [heading_row, *(cells for _kind, cells in chunk)],
            colWidths=column_widths,
            repeatRows=1,
            style=style,
        )

    story.append(_PagedRows(rows(), make, tracker))
    story.append(Spacer(1, 4 * mm))
    story.append(_aging(section, names, script, money))
    return story


def _aging(
    section: Section, names: Labels, script: _Script, money: Callable[[int], str]
) -> Flowable:
    rtl = script.rtl
    titles = (*names.buckets, names.total)
    width = FRAME_WIDTH / (len(titles) + 1)
    label = script.wrap(names.aging, width, BOLD)
    rows = [
        _ordered([label, *(script.wrap(t, width, BOLD) for t in titles)], rtl),
        _ordered(["", *(money(v) for v in aging_values(section.aging))], rtl),
    ]
    table = Table(rows, colWidths=[width] * (len(titles) + 1), hAlign="RIGHT" if rtl else "LEFT")
    table.setStyle(
        [
            ("FONT", (0, 0), (-1, -1), REGULAR, SIZE),
            ("FONT", (0, 0), (-1, 0), BOLD, SIZE),
            ("LEADING", (0, 0), (-1, -1), SIZE * 1.2),
            ("BACKGROUND", (0, 0), (-1, 0), _SHADE),
            ("ALIGN", (0, 0), (-1, -1), "LEFT" if rtl else "RIGHT"),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LINEBELOW", (0, 0), (-1, -1), 0.25, _GRID),
            ("LEFTPADDING", (0, 0), (-1, -1), PADDING),
            ("RIGHTPADDING", (0, 0), (-1, -1), PADDING),
        ]
    )
    return table
