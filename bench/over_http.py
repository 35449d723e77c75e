"""`make bench`: the portal's pages over HTTP under gunicorn, beside a hello and a floor page.

For each database (SQLite, and PostgreSQL in a database made for the run and dropped after) and
each data set (bench/dataset.py), it builds the data, serves bench/reference_app.py and then the
portal under the same gunicorn settings (2 sync workers, production settings, 127.0.0.1 on a free
port), and drives each page with wrk (bench/paths.lua) at concurrency 1 and 32. The payment
submit is driven from Python: the form, the confirm POST and the payment's page, timed from the
POST to a page showing the terminal status. It prints a table per database and size and writes
it to docs/BENCHMARKS.md, the previous run's figures under "Previous run".

Usage: python -m bench.over_http [--sizes a,b] [--databases sqlite,postgresql] [--seconds 5]
       [--pages dashboard,...] [--output docs/BENCHMARKS.md | --no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import dataset, load
from bench.redis_server import redis_server

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).with_name("paths.lua")
HOST = "billing.bench.test"
POSTGRES = os.environ.get(
    "PORTAL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
CONCURRENCY = (1, 32)
WORKERS = 2
PREVIOUS = "## Previous run"
LOAD_SECTION = "## Load: "  # bench/load.py's section, written by hand: kept as it is
FRAGMENT = {"HX-Request": "true", "HX-Target": "invoice-results"}
# The targets: (share of hello's requests/s at c=32, p50 / floor p50 at c=1)
TARGETS = {
    "dashboard": (0.10, 2.0),
    "invoice list": (None, 2.0),
    "invoice list (fragment)": (0.15, 2.0),
    "invoice list (search)": (0.05, 3.0),
    "invoice detail": (0.10, 2.0),
}
P99_OVER_P50 = 3.0


@dataclass
class Figure:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: Counter[int] = field(default_factory=Counter)
    socket_errors: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def not_ok(self) -> int:
        """Answers other than the page itself (a redirect to sign-in would be one)."""
        return sum(n for status, n in self.statuses.items() if status != 200)


@dataclass
class Page:
    name: str
    paths: list[str]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    database: str
    size: dataset.Size
    build_seconds: float
    levels: tuple[int, int]  # the concurrencies: one client, many
    references: dict[str, dict[int, Figure]]
    pages: dict[str, dict[int, Figure]]


def free_port() -> int:
    return load.free_port()


def require_wrk() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk not found: apt-get install wrk")
    return found


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    admin_url = make_url(POSTGRES).set(drivername="postgresql+psycopg")
    name = f"portal_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def gunicorn(app: str, env: dict[str, str], log: Path, ready: str) -> Iterator[str]:
    """`app` under gunicorn with 2 sync workers on a free port; yields the base URL."""
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--workers",
        str(WORKERS),
        "--bind",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        "--log-level",
        "warning",
        app,
    ]
    with log.open("ab") as out:
        server = subprocess.Popen(  # noqa: S603 - the venv's gunicorn, fixed arguments
            command, cwd=ROOT, env=env, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if server.poll() is not None:
                raise RuntimeError(f"gunicorn {app} exited; see {log}")
            try:
                if load.Client(base, host=HOST).request("GET", ready).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"gunicorn {app} did not come up; see {log}")
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def settle(base: str, page: Page, ready: str) -> None:
    """Before a figure: the requests a previous run left queued in gunicorn's backlog are served
    (a request that gets through comes after them), and each worker has served this page."""
    headers = {k: v for k, v in page.headers.items() if k != "Host"}
    load.Client(base, host=HOST).request("GET", ready)
    for path in page.paths[:1] * (2 * WORKERS):
        load.Client(base, host=HOST).request("GET", path, headers=headers)


def run_wrk(base: str, page: Page, connections: int, seconds: int, folder: Path) -> Figure:
    threads = min(connections, 2)
    paths, headers = folder / "paths.txt", folder / "headers.txt"
    paths.write_text("\n".join(page.paths) + "\n")
    headers.write_text("".join(f"{k}: {v}\n" for k, v in page.headers.items()))
    env = {
        **os.environ,
        "BENCH_PATHS": str(paths),
        "BENCH_HEADERS": str(headers),
        "BENCH_THREADS": str(threads),
    }
    command = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "30s",
        "-s",
        str(SCRIPT),
        base + page.paths[0],
    ]
    done = subprocess.run(  # noqa: S603 - wrk, fixed arguments
        command, env=env, capture_output=True, text=True, check=True, timeout=seconds + 120
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures: {done.stdout}{done.stderr}")
    data = json.loads(line[len("BENCH ") :])
    return Figure(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        statuses=Counter({int(k): v for k, v in data["statuses"].items()}),
        socket_errors=data["socket_errors"],
    )


def pay_all(
    base: str,
    cookies: dict[str, str],
    payable: Iterator[tuple[str, int]],
    clients: int,
    seconds: int,
) -> Figure:
    """Payments of whole balances by the saved Visa for `seconds`, by `clients` threads: form,
    confirm POST, the payment's page; timed from the POST to a page with a terminal status."""
    lock = threading.Lock()
    samples: list[float] = []
    statuses: Counter[int] = Counter()
    failures = 0
    deadline = time.monotonic() + seconds

    def next_invoice() -> tuple[str, int] | None:
        with lock:
            return next(payable, None)

    def worker() -> None:
        nonlocal failures
        client = load.Client(base, cookies, host=HOST)
        while time.monotonic() < deadline:
            picked = next_invoice()
            if picked is None:
                return
            invoice, balance = picked
            form = client.request("GET", f"/portal/payment?invoice={invoice}")
            key, token = load.KEY.search(form.text), load.CSRF.search(form.text)
            method = load.METHOD.search(form.text)
            if form.status != 200 or not (key and token and method):
                with lock:
                    statuses[form.status] += 1
                    failures += 1
                continue
            data: dict[str, str | list[str]] = {
                "csrf_token": token.group(1),
                "idempotency_key": key.group(1),
                "invoice": invoice,
                "action": "confirm",
                "method": method.group(1) or method.group(2),
                f"amount-{invoice}": f"{balance / 100:.2f}",
            }
            started = time.perf_counter()
            answer = client.request("POST", "/portal/payment", form=data)
            location = answer.headers.get("Location", "")
            status = answer.status
            terminal = False
            while status == 303 and location.startswith("/portal/payments/"):
                shown = client.request("GET", location)
                status = shown.status
                terminal = "payment-succeeded" in shown.text or "payment-failed" in shown.text
                if terminal or status != 200 or time.perf_counter() - started > 30:
                    break
                time.sleep(0.05)
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                statuses[status] += 1
                if terminal:
                    samples.append(elapsed)
                else:
                    failures += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    took = time.perf_counter() - started
    return Figure(
        requests=len(samples),
        seconds=took,
        p50_ms=statistics.median(samples) if samples else 0.0,
        p99_ms=load.percentile(samples, 0.99) if samples else 0.0,
        statuses=statuses,
        socket_errors=failures,
    )


def portal_pages(facts: dataset.Facts, cookie: str) -> list[Page]:
    base = {"Cookie": cookie, "Host": HOST, "Accept-Language": "en"}
    last_page = max(1, -(-facts.customer_total // 25))
    return [
        Page("dashboard", ["/portal/dashboard"], base),
        Page("invoice list", ["/portal/invoices"], base),
        Page("invoice list (fragment)", ["/portal/invoices"], {**base, **FRAGMENT}),
        Page("invoice list (filtered)", ["/portal/invoices?status=overdue"], base),
        Page("invoice list (search)", ["/portal/invoices?q=Backup"], base),
        Page("invoice list (deep page)", [f"/portal/invoices?page={last_page}"], base),
        Page("invoice detail", [f"/portal/invoices/{i}" for i in facts.invoices[:500]], base),
        # Cold: every request another invoice's first PDF (c=1 and c=32 take different halves)
        Page("invoice PDF (cold)", [f"/portal/invoices/{i}/pdf" for i in facts.invoices], base),
        Page("invoice PDF (cached)", [f"/portal/invoices/{facts.invoices[0]}/pdf"], base),
        Page("payment form", [f"/portal/payment?invoice={facts.payable[0][0]}"], base),
        Page("payment history", ["/portal/payment-history"], base),
    ]


def server_env(url: str, folder: Path, secret: str, redis_url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PORTAL_ENV": "production",
        "REDIS_URL": redis_url,  # production needs one; the pages measured never touch it
        "SECRET_KEY": secret,
        "PUBLIC_URL": f"https://{HOST}",
        "PAYMENT_GATEWAY": "sandbox",
        "DATABASE_URL": url,
        "PORTAL_STORAGE_DIR": str(folder / "files"),
        "PORTAL_MAIL_DIR": str(folder / "mail"),
    }
    for name in ("METRICS_TOKEN", "SECRET_KEY_FALLBACKS"):
        env.pop(name, None)
    return env


def measure(
    kind: str,
    size: dataset.Size,
    seconds: int,
    only: set[str] | None,
    log: Path,
    levels: tuple[int, int] = CONCURRENCY,
) -> Result:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-{size.name}-"))
    secret = secrets.token_urlsafe(48)

    def wanted(name: str) -> bool:
        return only is None or name in only

    try:
        with database(kind, folder) as url, redis_server(log) as redis:
            print(f"{kind}, {dataset.describe(size)}: building ...", flush=True)
            facts = dataset.build(url, folder, size, secret)
            print(f"  built in {facts.seconds:.1f} s", flush=True)
            env = server_env(url, folder, secret, redis.url)
            references: dict[str, dict[int, Figure]] = {}
            with gunicorn(
                "bench.reference_app:app",
                {**env, "BENCH_COMPANY_ID": str(facts.company_id)},
                log,
                "/hello",
            ) as base:
                for name in ("hello", "floor"):
                    page = Page(name, [f"/{name}"])
                    references[name] = {}
                    for c in levels:
                        settle(base, page, "/hello")
                        references[name][c] = run_wrk(base, page, c, seconds, folder)
                    print(f"  {name}: {short(references[name])}", flush=True)
            pages: dict[str, dict[int, Figure]] = {}
            with gunicorn("wsgi:app", env, log, "/healthz") as base:
                cookies, _ = load.sign_in(base, "admin@acme.test", 0, host=HOST)
                cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
                for page in portal_pages(facts, cookie):
                    if not wanted(page.name):
                        continue
                    figures = {}
                    for c in levels:
                        settle(base, page, "/healthz")
                        if page.name == "invoice PDF (cold)":
                            half = len(page.paths) // 2
                            part = page.paths[:half] if c == 1 else page.paths[half:]
                            cold = Page(page.name, part, page.headers)
                            figures[c] = run_wrk(base, cold, c, seconds, folder)
                        else:
                            figures[c] = run_wrk(base, page, c, seconds, folder)
                    pages[page.name] = figures
                    print(f"  {page.name}: {short(figures)}", flush=True)
                if wanted("payment submit"):
                    payable = iter(facts.payable[1:])
                    pages["payment submit"] = {}
                    for c in levels:
                        load.Client(base, host=HOST).request("GET", "/healthz")
                        pages["payment submit"][c] = pay_all(base, cookies, payable, c, seconds)
                    print(f"  payment submit: {short(pages['payment submit'])}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return Result(kind, size, facts.seconds, levels, references, pages)


def short(figures: dict[int, Figure]) -> str:
    return ", ".join(
        f"c={c} {f.rps:.1f}/s p50 {f.p50_ms:.1f} p99 {f.p99_ms:.1f} ms 5xx {f.server_errors}"
        for c, f in figures.items()
    )


def ratio(value: float, reference: float) -> float:
    return value / reference if reference else 0.0


def table(result: Result) -> list[str]:
    hello, floor = result.references["hello"], result.references["floor"]
    low, high = result.levels
    lines = [
        f"### {result.database}, size {result.size.name}: {dataset.describe(result.size)}",
        "",
        f"Data set built in {result.build_seconds:.1f} s.",
        "",
        f"| page | c={low} req/s | c={low} p50 ms | c={low} p99 ms | p50 / floor (target) "
        f"| p99 / p50 (≤ 3) | c={high} req/s | c={high} p50 ms | c={high} p99 ms "
        "| req/s / hello (target) | 5xx | other non-200 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, figures: dict[int, Figure], reference: bool = False) -> str:
        one, many = figures[low], figures[high]
        share, latency = TARGETS.get(name, (None, None))
        over_floor = ratio(one.p50_ms, floor[low].p50_ms)
        over_hello = ratio(many.rps, hello[high].rps)
        floor_cell = (
            ""
            if reference
            else f"{over_floor:.1f}x"
            + (f" ({'≤' if over_floor <= latency else '**>**'} {latency:g}x)" if latency else "")
        )
        hello_cell = (
            ""
            if reference
            else f"{over_hello:.1%}"
            + (f" ({'≥' if over_hello >= share else '**<**'} {share:.0%})" if share else "")
        )
        spread = ratio(one.p99_ms, one.p50_ms)
        spread_cell = f"{spread:.1f}" + ("" if spread <= P99_OVER_P50 else " **>**")
        errors = one.server_errors + many.server_errors
        other = one.not_ok + many.not_ok - errors + one.socket_errors + many.socket_errors
        return (
            f"| {name} | {one.rps:.1f} | {one.p50_ms:.1f} | {one.p99_ms:.1f} | {floor_cell} | "
            f"{spread_cell} | {many.rps:.1f} | {many.p50_ms:.1f} | {many.p99_ms:.1f} | "
            f"{hello_cell} | {errors} | {other} |"
        )

    lines.append(row("*hello (bare Flask)*", hello, reference=True))
    lines.append(row("*floor (Flask + Core + Jinja, 25 rows + count)*", floor, reference=True))
    lines += [row(name, figures) for name, figures in result.pages.items()]
    lines.append("")
    return lines


GROWTH = 1.5  # the target: from size a to size b, a page's p50 grows by at most this


def growth(results: list[Result]) -> list[str]:
    """Per database measured at two sizes: each page's p50 (one client) at the larger over the
    smaller, against the target."""
    lines: list[str] = []
    for database in dict.fromkeys(r.database for r in results):
        runs = sorted((r for r in results if r.database == database), key=lambda r: r.size.customer)
        if len(runs) < 2:
            continue
        small, large = runs[0], runs[-1]
        low = small.levels[0]
        lines += [
            f"### Growth on {database}: size {small.size.name} to {large.size.name} "
            f"(the customer's invoices {small.size.customer:,} to {large.size.customer:,})",
            "",
            f"| page | p50 ms, {small.size.name} | p50 ms, {large.size.name} "
            f"| growth (≤ {GROWTH:g}x) |",
            "|---|---:|---:|---:|",
        ]
        for name, figures in large.pages.items():
            if name not in small.pages:
                continue
            before, after = small.pages[name][low].p50_ms, figures[low].p50_ms
            grew = ratio(after, before)
            mark = "" if grew <= GROWTH else " **>**"
            lines.append(f"| {name} | {before:.1f} | {after:.1f} | {grew:.2f}x{mark} |")
        lines.append("")
    return lines


def document(results: list[Result], seconds: int, previous: str) -> str:
    load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# Benchmarks",
        "",
        f"`make bench` on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average "
        f"at the end {load_average}. Over HTTP: gunicorn, {WORKERS} sync workers, "
        "`PORTAL_ENV=production` (sandbox gateway, a redis-server of the bench's own), 127.0.0.1; "
        f"wrk (bench/paths.lua) for {seconds} s per figure at concurrency 1 (1 thread) and 32 "
        "(2 threads), signed in as `admin@acme.test` (company-wide). The references run in the "
        "same run under the same gunicorn settings: *hello* is a bare Flask view, *floor* is "
        "bare Flask + SQLAlchemy Core + Jinja with no session or layout rendering the same 25 "
        "rows and count as the invoice list, read as the list reads them (the count from the "
        "invoice tallies; bench/reference_app.py). Targets: at "
        "c=32 the list fragment ≥ 15 % of hello's requests/s, dashboard and detail ≥ 10 %, "
        "search ≥ 5 %; at c=1 p50 within 2x the floor's (search 3x), p99 ≤ 3x p50; no 5xx; "
        f"from size a to b every page's p50 grows by at most {GROWTH:g}x. A "
        "**>** or **<** marks a miss.",
        "",
        "Pages: the list is `/portal/invoices` (fragment: `HX-Request` and `HX-Target: "
        "invoice-results`; filtered: `status=overdue`; search: `q=Backup`, a word in a fifth of "
        "the line descriptions; deep page: the last page); detail cycles over 500 invoices; the "
        "cold PDF asks for another invoice's PDF every request (c=1 and c=32 take different "
        "halves of the customer's invoices); the cached PDF is one invoice's. *payment submit* "
        "is driven from Python (the form, then timed: the confirm POST by the saved Visa for "
        "the whole balance and the payment's page until it shows a terminal status); its "
        "requests/s counts payments, and its c=32 runs 32 Python threads on the same 2 cores.",
        "",
    ]
    for result in results:
        lines += table(result)
    lines += growth(results)
    kept_load = previous[previous.find(LOAD_SECTION) :] if LOAD_SECTION in previous else ""
    before = previous[: previous.find(LOAD_SECTION)] if kept_load else previous
    before = before.split(PREVIOUS)[0]
    before = re.sub(r"^# Benchmarks\s*", "", before)
    before = re.sub(r"^(#{2,5}) ", r"#\1 ", before, flags=re.MULTILINE)
    if before.strip():
        lines += [PREVIOUS, "", before.strip(), ""]
    if kept_load:
        lines += [kept_load.rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="a,b", help=f"of {', '.join(dataset.SIZES)}")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--concurrency", default="1,32", help="one client, many")
    parser.add_argument("--pages", help="only these pages (comma separated names)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--log", type=Path, help="the servers' log (default: a temporary file)")
    args = parser.parse_args(argv)
    require_wrk()
    only = set(args.pages.split(",")) if args.pages else None
    log = args.log or Path(tempfile.mkstemp(prefix="bench-servers-", suffix=".log")[1])
    low, high = (int(c) for c in args.concurrency.split(","))
    results = [
        measure(kind, dataset.SIZES[size], args.seconds, only, log, (low, high))
        for size in args.sizes.split(",")
        for kind in args.databases.split(",")
    ]
    previous = args.output.read_text() if args.output.exists() else ""
    text_out = document(results, args.seconds, previous)
    print("\n".join(line for result in results for line in table(result)))
    print(f"servers' log: {log}")
    if not args.no_write:
        args.output.write_text(text_out)
        print(f"written to {args.output}")
    return results


if __name__ == "__main__":
    main()
