"""`make bench`'s background jobs harness end to end on a few jobs: a redis-server of its own,
the stock `rq worker` and `flask jobs worker` in burst mode, every row done once with its mail,
then the section in docs/BENCHMARKS.md."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import jobs
from portal import migrate
from portal.db import make_engine
from tests.conftest import BACKENDS

DOCUMENT = (
    "# Benchmarks\n\n## sqlite\n\n| page | ms |\n|---|---:|\n| x | 1 |\n\n"
    "## Load: clients\n\nKept.\n\n## Misses explained (profiles)\n\n- Why.\n"
)


@pytest.mark.parametrize("database", BACKENDS)
def test_the_harness_measures_jobs_per_second_of_both_workers(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "BENCHMARKS.md"
    output.write_text(DOCUMENT)
    before, after = jobs.main(
        [
            f"--databases={database}",
            "--jobs=5",
            "--before-jobs=2",
            "--repeats=1",
            f"--output={output}",
            f"--log={tmp_path / 'workers.log'}",
        ]
    )
    assert (before.database, before.worker, before.jobs) == (database, "before", 2)
    assert (after.database, after.worker, after.jobs) == (database, "after", 5)
    for figures in (before, after):
        (run,) = figures.runs
        assert 0 < run.startup < run.total
        assert figures.rate > 0
        assert figures.per_job > 0
    written = output.read_text()
    printed = capsys.readouterr().out
    assert f"| {database} | before: `rq worker --burst`" in printed
    assert f"| {database} | after: `flask jobs worker --burst`" in written
    # in place: after the kept sections, before the profiles, the rest untouched
    assert written.startswith(DOCUMENT.split("## Misses")[0] + jobs.SECTION)
    assert written.endswith("\n## Misses explained (profiles)\n\n- Why.\n")


def test_a_row_not_done_or_a_missing_mail_fails_the_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        migrate.upgrade(connection=connection)
    engine.dispose()
    started = datetime.now(UTC)
    with jobs.redis_server(tmp_path / "redis.log") as server:
        ids = jobs.write_work(url, server.url, 2, "unrun")
        with server.client() as client:
            assert client.llen("rq:queue:portal") == 2  # handed over as the portal does
    with pytest.raises(RuntimeError, match=r"work \d+: queued, 0 attempt\(s\).*0 mail\(s\)"):
        jobs.check(url, ids, tmp_path / "mail", started)


def figures(database: str, rates: tuple[float, float]) -> list[jobs.Figures]:
    return [
        jobs.Figures(database, worker, [jobs.Run(10, 1.0, 10 / rate)])
        for worker, rate in zip(("before", "after"), rates, strict=True)
    ]


def test_a_new_run_keeps_the_figures_it_replaces_under_previous_run(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    output.write_text(DOCUMENT)
    jobs.write(output, figures("sqlite", (0.5, 5.0)), 3)
    jobs.write(output, figures("sqlite", (0.4, 8.0)), 3)
    jobs.write(output, figures("sqlite", (0.25, 10.0)), 3)
    written = output.read_text()
    assert written.count(jobs.SECTION) == 1
    assert written.count(jobs.PREVIOUS) == 1
    now, previous = written.split(jobs.SECTION)[1].split(jobs.PREVIOUS)
    assert "| 10 | 10.00 |" in now
    assert "- sqlite: 40x the jobs per second (0.25 to 10.00)" in now
    assert "| 10 | 8.00 |" in previous
    assert "|\n\n- sqlite: 20x the jobs per second (0.40 to 8.00)" in previous
    assert "5.00" not in written  # the run before the previous one is dropped
    assert written.endswith("\n## Misses explained (profiles)\n\n- Why.\n")
