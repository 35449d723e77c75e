"""`make bench`'s harness end to end on a tiny data set: gunicorn, wrk, the references, sign-in,
a page, the htmx fragment and payments to their terminal status, then the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import over_http


def test_the_harness_measures_pages_over_http(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\n## sqlite\n\n| page | median ms |\n|---|---:|\n| x | 1 |\n")
    pages = ("invoice list (fragment)", "payment submit")
    (result,) = over_http.main(
        [
            "--sizes=tiny",
            "--databases=sqlite",
            "--seconds=1",
            "--concurrency=1,4",
            f"--pages={','.join(pages)}",
            f"--output={output}",
            f"--log={tmp_path / 'servers.log'}",
        ]
    )
    assert set(result.pages) == set(pages)
    for figures in (*result.references.values(), *result.pages.values()):
        for figure in figures.values():
            assert figure.requests > 0
            assert figure.server_errors == 0
            assert figure.not_ok == 0
    written = output.read_text()
    printed = capsys.readouterr().out
    for text in (written, printed):
        assert "### sqlite, size tiny" in text
        assert "| invoice list (fragment) |" in text
        assert "| *hello (bare Flask)* |" in text
    # the earlier figures move under "Previous run", a level down
    assert "## Previous run\n\n### sqlite\n\n| page | median ms |" in written


def test_growth_compares_each_page_between_two_sizes_and_marks_a_miss() -> None:
    def result(size: str, list_ms: float, search_ms: float) -> over_http.Result:
        pages = {
            "invoice list": {1: over_http.Figure(10, 1.0, list_ms, list_ms)},
            "invoice list (search)": {1: over_http.Figure(10, 1.0, search_ms, search_ms)},
        }
        return over_http.Result("sqlite", over_http.dataset.SIZES[size], 0.0, (1, 32), {}, pages)

    lines = over_http.growth([result("b", 12.0, 40.0), result("a", 10.0, 10.0)])
    assert lines[0].startswith("### Growth on sqlite: size a to b")
    assert "| invoice list | 10.0 | 12.0 | 1.20x |" in lines
    assert "| invoice list (search) | 10.0 | 40.0 | 4.00x **>** |" in lines
    assert over_http.growth([result("a", 1.0, 1.0)]) == []  # one size: nothing to compare
