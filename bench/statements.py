"""`make bench`'s statement files: how long each format takes and whether its memory stays flat.

In one run, on made-up statements (bench/statement_data.py: lines from a generator, as the
ledger hands them), each written to a temporary file:

- PDF of 1,000 lines (portal/services/statements/render_pdf.py, ReportLab), budget 1.2 s;
- the reference: the same 1,000 rows as an xhtml2pdf HTML table with page numbers, the way the
  invoice is drawn, to show why the statement is not (no budget);
- XLSX of 10,000 lines (openpyxl write-only), budget 2 s; CSV of 10,000 lines, budget 0.5 s;
- peak memory (tracemalloc) of each format at 1,000 and 10,000 lines. The XLSX and CSV must stay
  flat: the peak at 10,000 under 3 times the peak at 1,000 (a list of the lines would make it
  ~10 times). The PDF reads its lines as pages are laid out, but ReportLab holds the drawn pages
  until the file is written (and the counting canvas until "of y" is known), so its peak grows
  with the pages; the bytes per line are reported.

Times are the median of the repeats, after one warm-up render (fonts, imports); budgets are judged
on CPU seconds (the machine may be shared). It exits 1 when a budget is missed. The section
"## Statement files" of docs/BENCHMARKS.md is written in place (before "## Misses explained
(profiles)"), the previous figures under "### Previous run".

Usage: python -m bench.statements [--pdf-lines 1000] [--sheet-lines 10000]
       [--memory-lines 1000,10000] [--repeats 3] [--output docs/BENCHMARKS.md | --no-write]
"""

from __future__ import annotations

import argparse
import html
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from bench import statement_data
from bench.report import PREVIOUS, write_section
from portal.services.money import format_money
from portal.services.statements import render_csv, render_pdf, render_xlsx
from portal.services.statements.data import StatementData, no_progress

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Statement files"
BUDGETS = {"pdf": 1.2, "xlsx": 2.0, "csv": 0.5}  # seconds
FLAT = 3.0  # the largest peak over the smallest may be at most this for a streamed format
STREAMED = ("xlsx", "csv")
Render = Callable[[StatementData, BinaryIO, Any], None]
RENDERERS: dict[str, Render] = {
    "pdf": render_pdf.render,
    "xlsx": render_xlsx.render,
    "csv": render_csv.render,
}


@dataclass
class Results:
    # format: (lines, wall-clock seconds, CPU seconds)
    times: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    peaks: dict[str, dict[int, int]] = field(default_factory=dict)  # format: {lines: bytes}
    sizes: dict[str, int] = field(default_factory=dict)  # format: file bytes

    def misses(self) -> list[str]:
        missed = [
            f"{fmt}: {cpu:.2f} s of CPU for {lines:,} lines, budget {BUDGETS[fmt]} s"
            for fmt, (lines, _wall, cpu) in self.times.items()
            if fmt in BUDGETS and cpu > BUDGETS[fmt]
        ]
        for fmt in STREAMED:
            peaks = self.peaks.get(fmt, {})
            if len(peaks) >= 2:
                small, large = min(peaks), max(peaks)
                if peaks[large] > FLAT * peaks[small]:
                    missed.append(
                        f"{fmt}: peak {peaks[large]:,} B at {large:,} lines, over {FLAT}x "
                        f"the {peaks[small]:,} B at {small:,}"
                    )
        return missed


def data(lines: int) -> StatementData:
    return statement_data.statement(statement_data.section(lines))


def timed(render: Render, lines: int) -> tuple[float, float, int]:
    """Wall-clock and CPU seconds to render `lines` lines to a temporary file, and its size."""
    statement = data(lines)
    with tempfile.TemporaryFile() as out:
        started, cpu = time.perf_counter(), time.process_time()
        render(statement, out, no_progress)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        return elapsed, cpu, out.tell()


def median_time(render: Render, lines: int, repeats: int) -> tuple[float, float, int]:
    timed(render, min(lines, 50))  # warm-up: fonts registered, modules imported
    runs = [timed(render, lines) for _ in range(repeats)]
    wall = statistics.median(run[0] for run in runs)
    cpu = statistics.median(run[1] for run in runs)
    return wall, cpu, runs[-1][2]


def peak(render: Render, lines: int) -> int:
    """tracemalloc's peak while rendering (the statement's lines are generated meanwhile)."""
    statement = data(lines)
    with tempfile.TemporaryFile() as out:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            render(statement, out, no_progress)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def reference_html(lines: int) -> str:
    """The 1,000 rows as xhtml2pdf draws the invoice: an HTML table, heading repeated, page
    numbers in a footer frame."""
    rows = []
    for line in statement_data.lines(lines, 123_450):
        cells = (
            line.day.isoformat(),
            line.kind.value,
            line.reference,
            line.description,
            format_money(line.debit, "USD", "en_US") if line.debit else "",
            format_money(line.credit, "USD", "en_US") if line.credit else "",
            format_money(line.balance, "USD", "en_US"),
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return (
        "<html><head><style>"
        "@page { size: a4; margin: 15mm 15mm 20mm 15mm;"
        " @frame footer { -pdf-frame-content: footer; bottom: 8mm; height: 8mm;"
        " left: 15mm; right: 15mm; } }"
        "body { font-size: 8pt; } td, th { padding: 2px; border-bottom: 0.25pt solid #ccc; }"
        "</style></head><body>"
        '<div id="footer">Page <pdf:pagenumber> of <pdf:pagecount></div>'
        '<table repeat="1"><thead><tr><th>Date</th><th>Type</th><th>Reference</th>'
        "<th>Description</th><th>Charges</th><th>Payments and credits</th><th>Balance</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></body></html>"
    )


def reference_time(lines: int) -> tuple[float, float, int]:
    from xhtml2pdf import pisa

    source = reference_html(lines)
    with tempfile.TemporaryFile() as out:
        started, cpu = time.perf_counter(), time.process_time()
        status = pisa.CreatePDF(source, dest=out)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if status.err:
            raise RuntimeError(f"xhtml2pdf reported {status.err} errors")
        return elapsed, cpu, out.tell()


def measure(
    pdf_lines: int, sheet_lines: int, memory_lines: list[int], repeats: int, reference: bool
) -> Results:
    results = Results()
    for fmt, lines in (("pdf", pdf_lines), ("xlsx", sheet_lines), ("csv", sheet_lines)):
        print(f"{fmt}: {lines:,} lines ...", flush=True)
        wall, cpu, size = median_time(RENDERERS[fmt], lines, repeats)
        results.times[fmt] = (lines, wall, cpu)
        results.sizes[fmt] = size
    if reference:
        print(f"reference (xhtml2pdf): {pdf_lines:,} rows ...", flush=True)
        wall, cpu, size = reference_time(pdf_lines)
        results.times["xhtml2pdf"] = (pdf_lines, wall, cpu)
        results.sizes["xhtml2pdf"] = size
    for fmt, render in RENDERERS.items():
        for lines in memory_lines:
            print(f"{fmt}: peak memory at {lines:,} lines ...", flush=True)
            results.peaks.setdefault(fmt, {})[lines] = peak(render, lines)
    return results


WHAT = {
    "pdf": "PDF (ReportLab platypus)",
    "xhtml2pdf": "reference: xhtml2pdf HTML table, same rows",
    "xlsx": "XLSX (openpyxl write-only)",
    "csv": "CSV",
}


def table(results: Results) -> list[str]:
    lines = [
        "| file | lines | CPU s | wall-clock s | budget (CPU) | lines/s (CPU) | file size |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for fmt, (count, wall, cpu) in results.times.items():
        budget = f"{BUDGETS[fmt]} s" if fmt in BUDGETS else "-"
        verdict = "" if fmt not in BUDGETS else (" ok" if cpu <= BUDGETS[fmt] else " MISSED")
        rate = count / cpu if cpu > 0 else 0.0
        lines.append(
            f"| {WHAT[fmt]} | {count:,} | {cpu:.3f} | {wall:.3f} | {budget}{verdict} | "
            f"{rate:,.0f} | {results.sizes.get(fmt, 0) / 1024:,.0f} KiB |"
        )
    if "xhtml2pdf" in results.times and "pdf" in results.times:
        ratio = results.times["xhtml2pdf"][2] / max(results.times["pdf"][2], 1e-9)
        lines += ["", f"The same rows take xhtml2pdf {ratio:.0f}x as long as ReportLab directly."]
    if results.peaks:
        sizes = sorted({n for peaks in results.peaks.values() for n in peaks})
        lines += [
            "",
            "| file | " + " | ".join(f"peak at {n:,} lines" for n in sizes) + " | growth |"
            " per added line |",
            "|---|" + "---:|" * (len(sizes) + 2),
        ]
        for fmt, peaks in results.peaks.items():
            small, large = min(peaks), max(peaks)
            growth = peaks[large] / peaks[small] if peaks[small] else 0.0
            per_line = (peaks[large] - peaks[small]) / (large - small) if large > small else 0.0
            flat = ""
            if fmt in STREAMED:
                flat = " flat" if growth <= FLAT else " NOT FLAT"
            cells = " | ".join(f"{peaks[n] / 1024 / 1024:.1f} MiB" for n in sizes)
            lines.append(f"| {fmt} | {cells} | {growth:.1f}x{flat} | {per_line:,.0f} B |")
    return lines


def section(results: Results, repeats: int, previous: str) -> str:
    load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    misses = results.misses()
    lines = [
        SECTION,
        "",
        f"`python -m bench.statements` (run by `make bench`; `make bench-statements` alone) on "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average at the end {load_average}. "
        "One account's statement of made-up lines (bench/statement_data.py), the lines from a "
        "generator as the ledger hands them, each file written to a temporary file; seconds "
        f"are the median of {repeats} renders after a warm-up one, the budgets judged on CPU "
        "seconds of the process (the machine is shared: wall-clock time waits for other work). "
        "Peak memory is tracemalloc's "
        "while rendering: the XLSX and CSV stream their rows (flat: the peak at the most lines "
        f"at most {FLAT:.0f}x that at the fewest); the PDF reads its lines a page at a time, "
        "but ReportLab holds the drawn pages until the file is written (the counting canvas "
        "until the page count is known), so its peak grows with the pages.",
        "",
        *table(results),
        "",
        "Budgets: " + ("all met." if not misses else "MISSED: " + "; ".join(misses) + "."),
        "",
    ]
    if previous.strip():
        lines += [PREVIOUS, "", previous.strip(), ""]
    return "\n".join(lines)


def write(output: Path, results: Results, repeats: int) -> None:
    """This benchmark's section of `output`, in place (bench/report.py)."""
    write_section(output, SECTION, lambda previous: section(results, repeats, previous))


def main(argv: list[str] | None = None) -> Results:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--pdf-lines", type=int, default=1_000)
    parser.add_argument("--sheet-lines", type=int, default=10_000, help="XLSX and CSV")
    parser.add_argument("--memory-lines", default="1000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true", help="skip xhtml2pdf")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    memory_lines = [int(n) for n in args.memory_lines.split(",") if n]
    results = measure(
        args.pdf_lines, args.sheet_lines, memory_lines, args.repeats, not args.no_reference
    )
    print("\n".join(table(results)))
    if not args.no_write:
        write(args.output, results, args.repeats)
        print(f"written to {args.output}")
    misses = results.misses()
    if misses:
        print("budget missed: " + "; ".join(misses), file=sys.stderr)
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
