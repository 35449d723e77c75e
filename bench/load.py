"""Load: concurrent clients browsing, filtering, downloading and paying against a real server.

By default it does what `make run` does in a temporary instance directory (PORTAL_ENV=development,
SQLite, the sandbox gateway): `flask --app wsgi db upgrade`, `seed demo`, then `python -m
workers.dev` (the web server, an RQ worker and an embedded Redis) on a free port, and it drives
that. `--url` drives a server that is
already running instead (e.g. `make run PORT=5055`, freshly seeded).

Four demo users sign in once each (TOTP codes cannot be replayed, and sign-in is rate limited)
and the clients share those sessions. Each client loops over a weighted mix: dashboard, invoice
list with filters and sorting (page and htmx fragment), invoice detail (which records
Portal.InvoiceViewed), PDF, ZIP of several, payment history and its CSV, "Stay signed in"
(POST /session/extend), the dispute form and disputes, and payments (form, then confirm with a
small amount by the saved Visa, then the payment's page). It reports requests, status counts,
5xx by path and latency percentiles, and, for a server it started, the tracebacks in its log.

Usage: python -m bench.load [--clients 32] [--duration 60] [--url http://127.0.0.1:5000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pyotp

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "portal-demo-2026"  # noqa: S105 - the contract's demo password
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # noqa: S105 - the contract's demo secret
USERS = ("admin@acme.test", "ap@acme.test", "admin@globex.test", "admin@acme.test")
CSRF = re.compile(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"')
KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')
INVOICE_LINK = re.compile(r'href="/portal/invoices/(inv_[A-Za-z0-9_-]+)"')
OPAQUE_ID = re.compile(r"(inv|pay|pm)_[A-Za-z0-9_-]+")
ACCOUNT = re.compile(r'name="accounts" type="checkbox" value="([^"]+)"')
METHOD = re.compile(r'name="method"[^>]*value="(pm_[A-Za-z0-9_-]+)"|value="(pm_[A-Za-z0-9_-]+)"')


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Client:
    """One browser: its own cookie jar (a copy of a signed-in session's cookie)."""

    def __init__(
        self, base: str, cookies: dict[str, str] | None = None, host: str | None = None
    ) -> None:
        parts = urlsplit(base)
        self.host_header = host  # a Host header other than the address's (production's name)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.cookies = dict(cookies or {})

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str | list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        body = urlencode(form, doseq=True).encode() if form is not None else None
        sent = {"Accept-Language": "en", **(headers or {})}
        if self.host_header:
            sent["Host"] = self.host_header
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
            for value in response.headers.get_all("Set-Cookie") or []:
                cookie: SimpleCookie = SimpleCookie()
                cookie.load(value)
                for name, morsel in cookie.items():
                    if morsel.value:
                        self.cookies[name] = morsel.value
                    else:
                        self.cookies.pop(name, None)
            return Answer(response.status, dict(response.headers.items()), data)
        finally:
            connection.close()


def sign_in(
    base: str, email: str, after_step: int, host: str | None = None
) -> tuple[dict[str, str], int]:
    """Both factors; returns the session's cookies and the TOTP step used. Codes are good for
    one step either side of the server's and each step only once per user, so the code is
    the current step's, or the next one's if this user just used the current one."""
    client = Client(base, host=host)
    token = CSRF.search(client.request("GET", "/login").text)
    assert token, "no CSRF token on /login"
    answer = client.request(
        "POST", "/login", {"csrf_token": token.group(1), "email": email, "password": PASSWORD}
    )
    assert answer.status == 302, f"sign-in of {email} answered {answer.status}"
    token = CSRF.search(client.request("GET", "/login/mfa").text)
    assert token, "no CSRF token on /login/mfa"
    step = max(after_step + 1, int(time.time()) // 30)
    while step > int(time.time()) // 30 + 1:  # not valid yet
        time.sleep(1)
    code = pyotp.TOTP(TOTP_SECRET).at(step * 30)
    answer = client.request("POST", "/login/mfa", {"csrf_token": token.group(1), "code": code})
    assert answer.status == 302, f"second factor of {email} answered {answer.status}"
    return client.cookies, step


@dataclass
class Shared:
    """What every client of one signed-in session knows."""

    email: str
    cookies: dict[str, str]
    invoices: list[str] = field(default_factory=list)
    payable: list[str] = field(default_factory=list)


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[int] = field(default_factory=Counter)
    by_kind: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    kind_statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    errors: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, path: str, status: int, elapsed: float) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.by_kind[kind].append(elapsed)
            self.kind_statuses[kind][status] += 1
            if status >= 500:
                self.errors[f"{status} {OPAQUE_ID.sub('<id>', path.split('?')[0])}"] += 1


def timed(
    tally: Tally, client: Client, kind: str, method: str, path: str, **kwargs: object
) -> Answer:
    started = time.perf_counter()
    try:
        answer = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    except (OSError, http.client.HTTPException) as error:
        with tally.lock:
            tally.failures[f"{kind}: {type(error).__name__}"] += 1
        return Answer(0, {}, b"")
    tally.add(kind, path, answer.status, (time.perf_counter() - started) * 1000)
    return answer


def discover(base: str, shared: Shared) -> None:
    client = Client(base, shared.cookies)
    seen: list[str] = []
    for page in range(1, 4):
        text = client.request("GET", f"/portal/invoices?page={page}").text
        seen += [i for i in INVOICE_LINK.findall(text) if i not in seen]
    shared.invoices = seen
    text = client.request("GET", "/portal/invoices?status=open").text
    shared.payable = list(dict.fromkeys(INVOICE_LINK.findall(text)))


def csrf_of(client: Client, path: str, tally: Tally, kind: str) -> str | None:
    answer = timed(tally, client, kind, "GET", path)
    match = CSRF.search(answer.text)
    return match.group(1) if match else None


def pay(client: Client, shared: Shared, tally: Tally, rng: random.Random) -> None:
    if not shared.payable:
        return
    invoice = rng.choice(shared.payable)
    answer = timed(tally, client, "payment form", "GET", f"/portal/payment?invoice={invoice}")
    key, token = KEY.search(answer.text), CSRF.search(answer.text)
    method = METHOD.search(answer.text)
    if answer.status != 200 or not (key and token and method):
        return
    amount = f"{rng.randint(1, 99) / 100:.2f}"  # cents: invoices stay payable for a long run
    form: dict[str, str | list[str]] = {
        "csrf_token": token.group(1),
        "idempotency_key": key.group(1),
        "invoice": invoice,
        "action": "confirm",
        "method": method.group(1) or method.group(2),
        f"amount-{invoice}": amount,
    }
    answer = timed(tally, client, "payment confirm", "POST", "/portal/payment", form=form)
    location = answer.headers.get("Location", "")
    if answer.status == 303 and location.startswith("/portal/payments/"):
        timed(tally, client, "payment page", "GET", location)


def dispute(client: Client, shared: Shared, tally: Tally, rng: random.Random) -> None:
    if not shared.invoices:
        return
    invoice = rng.choice(shared.invoices)
    path = f"/portal/invoices/{invoice}/dispute"
    token = csrf_of(client, path, tally, "dispute form")
    if token is None:
        return  # not disputable: the form redirected to the invoice
    form: dict[str, str | list[str]] = {
        "csrf_token": token,
        "reason": "incorrect_amount",
        "amount": "",
        "message": "Load test: the quantity on line 1 is wrong.",
    }
    timed(tally, client, "dispute submit", "POST", path, form=form)


def statement(client: Client, tally: Tally, rng: random.Random, *, ask: bool = False) -> None:
    """The statements page, and every other time (always when `ask`) a statement asked for (a
    write, and work handed to the outbox): the last 30 days, in one of the three formats."""
    answer = timed(tally, client, "statements page", "GET", "/portal/statements")
    token = CSRF.search(answer.text)
    if answer.status != 200 or token is None or (not ask and rng.random() < 0.5):
        return
    end = date.today() - timedelta(days=1)  # never "in the future" wherever the server is
    form: dict[str, str | list[str]] = {
        "csrf_token": token.group(1),
        "start_date": (end - timedelta(days=30)).isoformat(),
        "end_date": end.isoformat(),
        "format": rng.choice(["pdf", "xlsx", "csv"]),
        "accounts": ACCOUNT.findall(answer.text),
    }
    timed(tally, client, "statement request", "POST", "/portal/statements", form=form)


def documents(client: Client, tally: Tally, rng: random.Random) -> None:
    query = rng.choice(["", "?type=credit_note", "?q=CN", "?from=2020-01-01&to=2030-12-31"])
    headers = {"HX-Request": "true", "HX-Target": "document-results"} if rng.random() < 0.5 else {}
    timed(tally, client, "documents", "GET", f"/portal/documents{query}", headers=headers)


# Where each client's first round lands (the sessions go by its index modulo four: admin@acme,
# ap@acme, admin@globex, admin@acme), so even a short run on a slow machine pays, extends,
# disputes, views, asks for a statement and lists documents: payment, "Stay signed in", dispute,
# invoice detail, then statement request, documents, "Stay signed in", payment.
FIRST_ROUND = (0.99, 0.70, 0.80, 0.30, 0.86, 0.90, 0.75, 0.99)


def one_round(
    client: Client,
    shared: Shared,
    tally: Tally,
    rng: random.Random,
    *,
    zips: bool = True,
    roll: float | None = None,
) -> None:
    first = roll is not None
    roll = rng.random() if roll is None else roll
    invoices = shared.invoices or ["inv_missing"]
    if roll < 0.10:
        timed(tally, client, "dashboard", "GET", "/portal/dashboard")
    elif roll < 0.28:
        query = rng.choice(
            [
                "",
                "?status=open",
                "?status=overdue",
                "?status=paid",
                "?q=Support",
                "?sort=-amount",
                "?sort=due_date&page=2",
                "?from=2020-01-01&to=2030-12-31",
            ]
        )
        headers = {"HX-Request": "true"} if rng.random() < 0.5 else {}
        timed(tally, client, "invoice list", "GET", f"/portal/invoices{query}", headers=headers)
    elif roll < 0.50:
        timed(tally, client, "invoice detail", "GET", f"/portal/invoices/{rng.choice(invoices)}")
    elif roll < 0.58:
        timed(tally, client, "invoice pdf", "GET", f"/portal/invoices/{rng.choice(invoices)}/pdf")
    elif roll < 0.62 and zips:
        picked = rng.sample(invoices, min(3, len(invoices)))
        query = urlencode([("invoice", i) for i in picked])
        timed(tally, client, "invoice zip", "GET", f"/portal/invoices/download?{query}")
    elif roll < 0.68:  # (and the ZIPs' share without them)
        path = rng.choice(["/portal/payment-history", "/portal/payment-history.csv"])
        timed(tally, client, "payment history", "GET", path)
    elif roll < 0.78:
        token = csrf_of(client, "/portal/security", tally, "security page")
        if token:
            timed(
                tally,
                client,
                "session extend",
                "POST",
                "/session/extend",
                form={"csrf_token": token},
                headers={"HX-Request": "true"},
            )
    elif roll < 0.84:
        dispute(client, shared, tally, rng)
    elif roll < 0.88:
        statement(client, tally, rng, ask=first)
    elif roll < 0.91:
        documents(client, tally, rng)
    elif shared.email == "admin@acme.test":
        pay(client, shared, tally, rng)
    else:
        timed(tally, client, "invoice detail", "GET", f"/portal/invoices/{rng.choice(invoices)}")


def drive(base: str, clients: int, duration: float, seed: int, *, zips: bool = True) -> Tally:
    """Sign in, find the invoices, then run `clients` threads for `duration` seconds (a round
    under way at the deadline finishes). Without `zips` no ZIP downloads (CPU, not locking)."""
    sessions: list[Shared] = []
    last_step: dict[str, int] = {}
    for email in USERS:
        cookies, last_step[email] = sign_in(base, email, last_step.get(email, 0))
        sessions.append(Shared(email, cookies))
    finders = [threading.Thread(target=discover, args=(base, shared)) for shared in sessions]
    for finder in finders:
        finder.start()
    for finder in finders:
        finder.join()
    tally = Tally()
    deadline = time.monotonic() + duration
    start = threading.Barrier(clients)

    def worker(index: int) -> None:
        rng = random.Random(seed + index)
        shared = sessions[index % len(sessions)]
        client = Client(base, shared.cookies)
        start.wait()
        first: float | None = FIRST_ROUND[index % len(FIRST_ROUND)]
        while time.monotonic() < deadline:
            one_round(client, shared, tally, rng, zips=zips, roll=first)
            first = None

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 300)
    return tally


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def report(tally: Tally, duration: float, clients: int, log: Path | None) -> dict[str, object]:
    total = sum(tally.statuses.values())
    every = [s for samples in tally.by_kind.values() for s in samples]
    server_errors = sum(n for status, n in tally.statuses.items() if status >= 500)
    summary: dict[str, object] = {
        "clients": clients,
        "seconds": duration,
        "requests": total,
        "per_second": round(total / duration, 1),
        "statuses": dict(sorted(tally.statuses.items())),
        "5xx": server_errors,
        "5xx_by_path": dict(tally.errors.most_common()),
        "connection_failures": dict(tally.failures),
    }
    lines = [
        f"{clients} clients, {duration:.0f} s: {total} requests ({total / duration:.1f}/s), "
        f"{server_errors} answered 5xx, {sum(tally.failures.values())} connection failures",
        "statuses: " + ", ".join(f"{s} x {n}" for s, n in sorted(tally.statuses.items())),
        "",
        f"{'request':<18} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        "  statuses",
    ]
    rows = [*sorted(tally.by_kind.items()), ("all", every)]
    for kind, samples in rows:
        if not samples:
            continue
        statuses = tally.kind_statuses.get(kind) or tally.statuses
        lines.append(
            f"{kind:<18} {len(samples):>6} {statistics.median(samples):>8.1f} "
            f"{percentile(samples, 0.95):>8.1f} {percentile(samples, 0.99):>8.1f} "
            f"{max(samples):>8.1f}  " + " ".join(f"{s}:{n}" for s, n in sorted(statuses.items()))
        )
    if tally.errors:
        lines += ["", "5xx by path: " + ", ".join(f"{p} x {n}" for p, n in tally.errors.items())]
    if log is not None:
        text = log.read_text(errors="replace")
        tracebacks = text.count("Traceback (most recent call last)")
        locked = text.count("database is locked")
        summary["server_tracebacks"] = tracebacks
        summary["database_is_locked"] = locked
        lines += ["", f"server log: {tracebacks} tracebacks, {locked} x 'database is locked'"]
    print("\n".join(lines))
    return summary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def make_run(folder: Path) -> Iterator[tuple[str, Path]]:
    """`make run` in `folder`: migrate, seed, then the web server (flask's development server),
    an RQ worker and an embedded Redis (workers/dev.py)."""
    port = free_port()
    env = {
        **os.environ,
        "PORTAL_ENV": "development",
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{folder / 'portal.db'}",
        "PORTAL_STORAGE_DIR": str(folder / "files"),
        "PORTAL_MAIL_DIR": str(folder / "mail"),
    }
    env.pop("REDIS_URL", None)
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    log = folder / "server.log"
    with log.open("wb") as out:
        for command in (["db", "upgrade"], ["seed", "demo"]):
            subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
                [*flask, *command], cwd=ROOT, env=env, stdout=out, stderr=out, check=True
            )
        server = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-m", "workers.dev", "--port", str(port), "--instance", str(folder)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if Client(base).request("GET", "/healthz").status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"the server did not come up; see {log}")
        yield base, log
    finally:
        server.send_signal(signal.SIGINT)  # the supervisor stops the web, the worker, then Redis
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--url", help="drive this running server instead of starting one")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance")
    args = parser.parse_args()
    if args.url:
        summary = report(
            drive(args.url, args.clients, args.duration, args.seed),
            args.duration,
            args.clients,
            None,
        )
    else:
        folder = Path(tempfile.mkdtemp(prefix="portal-load-"))
        try:
            with make_run(folder) as (base, log):
                tally = drive(base, args.clients, args.duration, args.seed)
            summary = report(tally, args.duration, args.clients, log)
        finally:
            if args.keep:
                print(f"instance kept in {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    sys.exit(1 if summary["5xx"] else 0)


if __name__ == "__main__":
    main()
