"""`make bench`'s background jobs: jobs per second with the app built for every job, and once.

For each database (SQLite in a file, PostgreSQL in a database made for the run and dropped
after; migrated, no data needed) and with a `redis-server` of its own on a free port, it writes
N rows of the outbox, each a mail (`workers.jobs.send_mail`, written as a file under a temporary
PORTAL_MAIL_DIR), hands them to Redis as the portal does (RQ job `workers.jobs.run_work` with id
`outbox-<id>-1`), starts one worker in burst mode and waits for it to exit:

- before: the stock `rq worker --burst portal` (what `make worker` started before the outbox).
  RQ forks a child for each job; its parent never built the app, so every child imports the
  portal and builds the app (`workers.jobs._context`) for that one job;
- after: `flask --app wsgi jobs worker --burst` (workers/worker.py): the app is built once,
  before any fork, and every job's child inherits it.

jobs/s is N over the time from starting the worker to the last row finished (the rows'
`finished_at`, written by the worker); start-up is the time to the first row finished, and per
job the time from the first row finished to the last over N - 1. Every row must end `done` after
one attempt, with one mail each, or the run fails. Both workers run the same N jobs: the
recurring sweep's schedule is put a day ahead, so the dispatcher does not add its own. Each
figure is the median of the repeats. The section "## Background jobs" of docs/BENCHMARKS.md is
written in place (before "## Misses explained (profiles)"), the previous figures under
"### Previous run".

Usage: python -m bench.jobs [--databases sqlite,postgresql] [--jobs 200] [--before-jobs 20]
       [--repeats 3] [--output docs/BENCHMARKS.md | --no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.over_http import HOST, ROOT, database
from bench.redis_server import RedisServer, redis_server
from bench.report import PREVIOUS, write_section
from portal import migrate
from portal.db import make_engine
from portal.models import Schedule, Work, WorkState
from portal.runtime import RUN_WORK, SCHEDULES
from portal.services import outbox
from workers.queue import RQJobQueue

SEND_MAIL = "workers.jobs.send_mail"
SECTION = "## Background jobs"
WORKERS = {
    "before": "`rq worker --burst` (the app built in every job)",
    "after": "`flask jobs worker --burst` (the app built once)",
}


@dataclass(frozen=True)
class Run:
    jobs: int
    startup: float  # seconds from starting the worker to the first row done
    total: float  # seconds from starting the worker to the last row done

    @property
    def rate(self) -> float:
        return self.jobs / self.total if self.total > 0 else 0.0

    @property
    def per_job(self) -> float:
        """Seconds per job once the first is done."""
        return (self.total - self.startup) / (self.jobs - 1) if self.jobs > 1 else 0.0


@dataclass(frozen=True)
class Figures:
    database: str
    worker: str  # "before" or "after"
    runs: list[Run]

    @property
    def jobs(self) -> int:
        return self.runs[0].jobs

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.runs)

    @property
    def startup(self) -> float:
        return statistics.median(r.startup for r in self.runs)

    @property
    def per_job(self) -> float:
        return statistics.median(r.per_job for r in self.runs)


def worker_env(url: str, redis_url: str, folder: Path) -> dict[str, str]:
    """The workers' environment: production settings, the run's database, Redis and mail dir."""
    env = {
        **os.environ,
        "PORTAL_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "PUBLIC_URL": f"https://{HOST}",
        "PAYMENT_GATEWAY": "sandbox",
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "PORTAL_STORAGE_DIR": str(folder / "files"),
        "PORTAL_MAIL_DIR": str(folder / "mail"),
    }
    for name in ("MAIL_URL", "METRICS_TOKEN", "SECRET_KEY_FALLBACKS"):
        env.pop(name, None)
    return env


def command(worker: str, redis_url: str) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if worker == "before":
        return [str(bin_dir / "rq"), "worker", "--burst", "--url", redis_url, "portal"]
    return [str(bin_dir / "flask"), "--app", "wsgi", "jobs", "worker", "--burst"]


def prepare(session: Session, now: datetime) -> None:
    """The recurring jobs' schedules a day ahead: the worker's dispatcher adds none of its own."""
    for name in SCHEDULES:
        row = session.get(Schedule, name)
        if row is None:
            session.add(Schedule(name=name, next_run_at=now + timedelta(days=1)))
        else:
            row.next_run_at = now + timedelta(days=1)


def write_work(url: str, redis_url: str, jobs: int, label: str) -> list[int]:
    """`jobs` mails as rows of the outbox, committed, then handed to Redis (as `hand_off` does)."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            now = datetime.now(UTC)
            prepare(session, now)
            rows = [
                outbox.add(
                    session,
                    SEND_MAIL,
                    [f"payer{n}@bench.test", f"Receipt {label} {n}", f"Thank you, payer {n}."],
                    now=now,
                )
                for n in range(jobs)
            ]
            handed = [(row.id, row.rq_job_id) for row in rows]
            session.commit()
    finally:
        engine.dispose()
    queue = RQJobQueue(redis_url)
    for work_id, rq_job_id in handed:
        queue.enqueue(RUN_WORK, work_id, job_id=rq_job_id)
    return [work_id for work_id, _ in handed]


def check(url: str, ids: list[int], mail_dir: Path, started: datetime) -> Run:
    """The run's figures, once every row is done after one attempt and every mail is written."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            rows = session.scalars(select(Work).where(Work.id.in_(ids))).all()
    finally:
        engine.dispose()
    problems = [
        f"work {row.id}: {row.state}, {row.attempts} attempt(s), {row.outcome}"
        for row in rows
        if row.state is not WorkState.DONE or row.attempts != 1 or row.finished_at is None
    ]
    if len(rows) != len(ids):
        problems.append(f"{len(ids) - len(rows)} row(s) missing")
    mails = [p.name for p in mail_dir.glob("*.eml")] if mail_dir.exists() else []
    # One file per row, named after its Message-ID: <work-<id>.<its time>@<host>>
    written = sorted(int(name.split(".", 1)[0].removeprefix("work-")) for name in mails)
    if written != sorted(ids):
        problems.append(f"{len(mails)} mail(s) written for {len(ids)} rows")
    if problems:
        raise RuntimeError("; ".join(problems[:10]))
    ends = [row.finished_at for row in rows if row.finished_at is not None]
    return Run(
        jobs=len(ids),
        startup=(min(ends) - started).total_seconds(),
        total=(max(ends) - started).total_seconds(),
    )


def run_once(
    kind: str, url: str, server: RedisServer, worker: str, jobs: int, log: Path, label: str
) -> Run:
    """One worker in burst mode over `jobs` fresh rows; its figures."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-jobs-{kind}-{worker}-"))
    try:
        with server.client() as client:
            client.flushdb()  # the bench's own server: nothing of an earlier run is left
        ids = write_work(url, server.url, jobs, label)
        env = worker_env(url, server.url, folder)
        with log.open("ab") as out:
            out.write(f"\n=== {kind}, {worker}, {jobs} jobs ===\n".encode())
            out.flush()
            started = datetime.now(UTC)
            process = subprocess.Popen(  # noqa: S603 - the venv's rq or flask, fixed arguments
                command(worker, server.url), cwd=ROOT, env=env, stdout=out, stderr=out
            )
            try:
                code = process.wait(timeout=60 + 10 * jobs)
            except subprocess.TimeoutExpired as error:
                process.kill()
                process.wait()
                raise RuntimeError(
                    f"{worker} worker did not finish {jobs} jobs; see {log}"
                ) from error
        if code != 0:
            raise RuntimeError(f"{worker} worker exited with {code}; see {log}")
        return check(url, ids, folder / "mail", started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure(kind: str, counts: dict[str, int], repeats: int, log: Path) -> list[Figures]:
    """Both workers on a fresh database of `kind`, `repeats` times each (alternating)."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-jobs-{kind}-"))
    runs: dict[str, list[Run]] = {worker: [] for worker in counts}
    try:
        with database(kind, folder) as url, redis_server(log) as server:
            engine = make_engine(url)
            try:
                with engine.begin() as connection:
                    migrate.upgrade(connection=connection)
            finally:
                engine.dispose()
            for repeat in range(repeats):
                for worker, jobs in counts.items():
                    run = run_once(kind, url, server, worker, jobs, log, f"{worker}-{repeat}")
                    runs[worker].append(run)
                    print(
                        f"  {kind}, {worker}: {run.jobs} jobs, {run.rate:.2f} jobs/s, start-up "
                        f"{run.startup:.2f} s, {run.per_job * 1000:.0f} ms per job",
                        flush=True,
                    )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [Figures(kind, worker, found) for worker, found in runs.items()]


def table(results: list[Figures]) -> list[str]:
    lines = [
        "| database | worker | jobs | jobs/s | start-up s | per job ms | jobs/s of each run |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for f in results:
        each = ", ".join(f"{r.rate:.2f}" for r in f.runs)
        lines.append(
            f"| {f.database} | {f.worker}: {WORKERS[f.worker]} | {f.jobs} | {f.rate:.2f} | "
            f"{f.startup:.2f} | {f.per_job * 1000:.0f} | {each} |"
        )
    lines.append("")
    for kind in dict.fromkeys(f.database for f in results):
        by_worker = {f.worker: f for f in results if f.database == kind}
        if {"before", "after"} <= set(by_worker) and by_worker["before"].rate:
            before, after = by_worker["before"], by_worker["after"]
            lines.append(
                f"- {kind}: {after.rate / before.rate:.0f}x the jobs per second "
                f"({before.rate:.2f} to {after.rate:.2f}); a job after the first takes "
                f"{before.per_job * 1000:.0f} ms before, {after.per_job * 1000:.0f} ms after."
            )
    lines.append("")
    return lines


def section(results: list[Figures], repeats: int, previous: str) -> str:
    load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    counts = ", ".join(
        f"{worker} {jobs}" for worker, jobs in {f.worker: f.jobs for f in results}.items()
    )
    lines = [
        SECTION,
        "",
        f"`python -m bench.jobs` (run by `make bench` after the pages; `make bench-jobs` alone) on "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average at the end {load_average}. For "
        "each database (migrated, no data) and a `redis-server` of its own, rows of the outbox "
        "that each send a mail (`workers.jobs.send_mail`, written to a file; `PORTAL_ENV="
        "production`) are handed to Redis as the portal hands them (`workers.jobs.run_work`, "
        "job id `outbox-<id>-1`); then one worker in burst mode runs them: *before* is the "
        "stock `rq worker` (the old `make worker`): a forked child per job that imports the "
        "portal and builds the app for that job; *after* is `flask --app wsgi jobs worker` "
        "(workers/worker.py): the app built once, before any fork, the dispatcher between jobs. "
        "jobs/s is the number of jobs over the time from starting the worker to the last row "
        "done; start-up is the time to the first row done; per job is the time from the first "
        "row done to the last over the jobs after the first. Every row ended `done` after one "
        f"attempt, with its mail written. Jobs per run: {counts} (the app built for every job "
        f"makes a long run slow); the median of {repeats} runs each.",
        "",
        *table(results),
    ]
    if previous.strip():
        lines += [PREVIOUS, "", previous.strip(), ""]
    return "\n".join(lines)


def write(output: Path, results: list[Figures], repeats: int) -> None:
    """This benchmark's section of `output`, in place (bench/report.py)."""
    write_section(output, SECTION, lambda previous: section(results, repeats, previous))


def main(argv: list[str] | None = None) -> list[Figures]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per run of the worker after")
    parser.add_argument(
        "--before-jobs", type=int, default=20, help="jobs per run of the stock rq worker"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--log", type=Path, help="the workers' log (default: a temporary file)")
    args = parser.parse_args(argv)
    log = args.log or Path(tempfile.mkstemp(prefix="bench-jobs-", suffix=".log")[1])
    counts = {"before": args.before_jobs, "after": args.jobs}
    results: list[Figures] = []
    for kind in args.databases.split(","):
        print(f"{kind}: background jobs ...", flush=True)
        results += measure(kind, counts, args.repeats, log)
    print("\n".join(table(results)))
    print(f"workers' log: {log}")
    if not args.no_write:
        write(args.output, results, args.repeats)
        print(f"written to {args.output}")
    return results


if __name__ == "__main__":
    main()
