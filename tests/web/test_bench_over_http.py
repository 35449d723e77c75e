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
