"""Profile the pages that grow with a customer's history: median ms per page over K requests,
with the Jinja macro calls and gettext calls one request makes, and optionally a pyinstrument
profile and the rendered HTML (to compare before and after a change to the templates).

One customer (Acme West, seen by admin@acme.test) holds N invoices on top of the demo data
(bench.dataset.build, as `make bench` builds its data: bulk inserts). In-process, through the
Flask test client.
Usage:
  python -m bench.profile_pages [--backend sqlite|postgresql] [--invoices 20000] [--runs 15]
      [--db FILE.db] (SQLite: reuse or keep the database, so two checkouts render the same data)
      [--html DIR] (write each page's HTML, tokens masked) [--profile PAGE] (pyinstrument text)
      [--sql PAGE] (each statement the page runs, with its time)
"""

from __future__ import annotations

import argparse
import functools
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyotp
from babel import support
from jinja2 import runtime
from sqlalchemy import event

from bench.dataset import Size
from bench.dataset import build as build_dataset
from bench.over_http import database
from portal import create_app
from portal.services import seed

SECRET = "bench-secret-" + "x" * 40


def build(url: str, folder: Path, count: int) -> None:
    """The customer's `count` invoices among as many of other companies' (one per hundred)."""
    build_dataset(url, folder, Size("profile", count, count, max(1, count // 100)), SECRET)


TOKEN = re.compile(r'(name="csrf_token"[^>]*value=|"X-CSRFToken": |nonce=)"[^"]*"')


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """Count Jinja macro calls and gettext lookups (templates' _() and ngettext, and Python's)."""
    counts: Counter[str] = Counter()
    patched = {
        (runtime.Macro, "__call__"): "macro calls",
        (support.NullTranslations, "ugettext"): "gettext calls",
        (support.NullTranslations, "ungettext"): "gettext calls",
        (support.Translations, "ugettext"): "gettext calls",
        (support.Translations, "ungettext"): "gettext calls",
    }
    originals = {key: getattr(*key) for key in patched}

    def wrap(original: Any, name: str) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(*args, **kwargs)

        return counted

    for (owner, attribute), name in patched.items():
        setattr(owner, attribute, wrap(originals[owner, attribute], name))
    try:
        yield counts
    finally:
        for (owner, attribute), original in originals.items():
            setattr(owner, attribute, original)


def sign_in(client: Any) -> None:
    def token(path: str) -> str:
        page = client.get(path).get_data(as_text=True)
        found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
        assert found, page[:300]
        return found.group(1)

    client.post(
        "/login",
        data={
            "csrf_token": token("/login"),
            "email": "admin@acme.test",
            "password": seed.DEMO_PASSWORD,
        },
    )
    for _attempt in range(2):  # a code used by the previous run is refused as a replay
        code = pyotp.TOTP(seed.DEMO_TOTP_SECRET).now()
        client.post("/login/mfa", data={"csrf_token": token("/login/mfa"), "code": code})
        if client.get("/portal/dashboard").status_code == 200:
            return
        time.sleep(31 - time.time() % 30)
    raise SystemExit("could not sign in")


def statement_times(engine: Any, request: Any) -> list[tuple[float, str]]:
    """Each statement `request()` runs, with its time in ms."""
    timed: list[tuple[float, str]] = []
    begun: list[float] = []

    def before(*_a: Any) -> None:
        begun.append(time.perf_counter())

    def after(*a: Any) -> None:
        timed.append(((time.perf_counter() - begun.pop()) * 1000, a[2]))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        request()
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    return timed


def run(url: str, folder: Path, args: argparse.Namespace) -> None:
    app = create_app(
        {
            "env": "testing",
            "secret_key": SECRET,
            "database_url": url,
            "storage_dir": str(folder / "files"),
            "argon2_time_cost": 1,
            "argon2_memory_cost": 64,
        }
    )
    client = app.test_client()
    sign_in(client)
    engine = app.extensions["portal.db"].engine
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    detail = f"inv_bench{args.invoices // 2:07d}"  # bench.dataset's ids
    fragment = {"HX-Request": "true", "HX-Target": "invoice-results"}
    pages: dict[str, tuple[str, dict[str, str]]] = {
        "invoice list": ("/portal/invoices", {}),
        "invoice list fragment": ("/portal/invoices?status=paid", fragment),
        "dashboard": ("/portal/dashboard", {}),
        "search q=Backup": ("/portal/invoices?q=Backup", {}),
        "invoice list page 400": ("/portal/invoices?page=400", {}),
        "invoice detail": (f"/portal/invoices/{detail}", {}),
        "payment history": ("/portal/payment-history", {}),
    }
    print(f"{engine.dialect.name}, {args.invoices:,} invoices, {args.runs} runs after a warm-up")
    print(
        f"{'page':<24}{'median ms':>10}{'p90 ms':>8}{'cpu ms':>8}{'SQL':>5}{'macros':>8}"
        f"{'gettext':>9}"
    )
    for name, (path, headers) in pages.items():
        response = client.get(path, headers=headers)  # warm: templates compiled, caches
        assert response.status_code == 200, (path, response.status_code)
        statements.clear()
        with counting() as counts:
            html = client.get(path, headers=headers).get_data(as_text=True)
        queries = len(statements)
        if args.html:
            target = Path(args.html) / (name.replace(" ", "_").replace("=", "-") + ".html")
            target.write_text(TOKEN.sub(r'\1"…"', html))
        samples, cpu = [], []
        for _ in range(args.runs):
            started, started_cpu = time.perf_counter(), time.process_time()
            client.get(path, headers=headers)
            samples.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
        samples.sort()
        p90 = samples[max(0, int(len(samples) * 0.9) - 1)]
        print(
            f"{name:<24}{statistics.median(samples):>10.1f}{p90:>8.1f}"
            f"{statistics.median(cpu):>8.1f}{queries:>5}"
            f"{counts['macro calls']:>8}{counts['gettext calls']:>9}"
        )
        if args.sql and args.sql == name:
            request = functools.partial(client.get, path, headers=headers)
            for ms, statement in statement_times(engine, request):
                print(f"  {ms:7.2f} ms  {' '.join(statement.split())[:150]}")
        if args.profile and args.profile == name:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            with profiler:
                for _ in range(args.runs):
                    client.get(path, headers=headers)
            print(profiler.output_text(unicode=True, color=False, show_all=False))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--invoices", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--db", help="SQLite file to reuse (built when missing)")
    parser.add_argument("--html", help="folder for each page's HTML, tokens masked")
    parser.add_argument("--profile", help="a page's name to profile with pyinstrument")
    parser.add_argument("--sql", help="a page's name: print each statement's time (ms)")
    args = parser.parse_args()
    if args.html:
        Path(args.html).mkdir(parents=True, exist_ok=True)
    if args.db and args.backend == "sqlite":
        path = Path(args.db).resolve()
        folder = path.parent
        url = f"sqlite:///{path}"
        if not path.exists():
            started = time.perf_counter()
            build(url, folder, args.invoices)
            print(f"built {path} in {time.perf_counter() - started:.0f} s")
        run(url, folder, args)
        return
    folder = Path(tempfile.mkdtemp(prefix=f"profile-{args.backend}-"))
    with database(args.backend, folder) as url:
        started = time.perf_counter()
        build(url, folder, args.invoices)
        print(f"built in {time.perf_counter() - started:.0f} s")
        run(url, folder, args)


if __name__ == "__main__":
    main()
