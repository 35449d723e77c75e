"""`make bench`'s statement files harness on a few lines: every format and the xhtml2pdf
reference timed, peaks measured, the section written in place; a missed budget fails it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import statements

DOCUMENT = (
    "# Benchmarks\n\n## Background jobs\n\nKept.\n\n## Misses explained (profiles)\n\n- Why.\n"
)


def test_the_harness_times_every_format_and_writes_its_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "BENCHMARKS.md"
    output.write_text(DOCUMENT)
    argv = [
        "--pdf-lines=30",
        "--sheet-lines=60",
        "--memory-lines=20,80",
        "--repeats=1",
        f"--output={output}",
    ]
    results = statements.main(argv)
    assert set(results.times) == {"pdf", "xlsx", "csv", "xhtml2pdf"}
    assert results.times["pdf"][0] == 30 and results.times["csv"][0] == 60
    assert all(wall > 0 and cpu > 0 for _, wall, cpu in results.times.values())
    assert all(set(peaks) == {20, 80} for peaks in results.peaks.values())
    assert all(size > 0 for size in results.sizes.values())
    written = output.read_text()
    assert written.startswith(DOCUMENT.split("## Misses")[0] + statements.SECTION)
    assert written.endswith("\n## Misses explained (profiles)\n\n- Why.\n")
    assert "| PDF (ReportLab platypus) | 30 |" in written and "Budgets: all met." in written
    assert "| csv |" in capsys.readouterr().out

    statements.main([*argv, "--no-reference", "--memory-lines="])  # again: the first moves down
    again = output.read_text()
    assert again.count(statements.SECTION) == 1 and statements.PREVIOUS in again


def test_a_missed_budget_or_growing_memory_is_reported() -> None:
    results = statements.Results(
        times={"pdf": (1000, 1.6, 1.5), "xlsx": (10_000, 3.0, 1.0), "csv": (10_000, 0.1, 0.1)},
        peaks={"csv": {1000: 100_000, 10_000: 900_000}, "xlsx": {1000: 1, 10_000: 2}},
    )
    misses = results.misses()
    assert len(misses) == 2
    assert misses[0].startswith("pdf: 1.50 s of CPU") and misses[1].startswith("csv: peak")
