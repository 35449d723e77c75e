"""A real server on loopback and real Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Every answer the server gives during the browser tests is recorded (`Answers`); at the end of
the browser session every HTML document and htmx fragment among them goes through the W3C Nu
HTML checker (`vnu.jar` from npm's vnu-jar, pinned in package.json) in one run, and any error
fails the run with the checker's message, the file, line and the URL that answered it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from flask import Flask, Response, request, template_rendered
from werkzeug.serving import make_server

from portal import create_app
from portal.services import seed
from tests.conftest import CI, FAST_ARGON2, TEST_SECRET, migrate_and_seed
from tests.work import ManualQueue

CHROMIUM = os.environ.get("PORTAL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
ROOT = Path(__file__).resolve().parent.parent.parent
VNU_JAR = Path(
    os.environ.get("PORTAL_TEST_VNU_JAR", ROOT / "node_modules/vnu-jar/build/dist/vnu.jar")
)


# One short run: the quick compiler alone and one GC thread take ~40 % less CPU than the JVM's
# defaults (same messages); the quick compiler's frames need a deeper stack than vnu's 512k.
JAVA_OPTIONS = ("-Xss16m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


@dataclass
class Answer:
    """One response of the live server, as the browser received it."""

    test: str  # the test that was running
    method: str
    url: str  # path and query
    status: int
    mimetype: str
    htmx: bool  # asked by htmx (HX-Request)
    body: str | None  # HTML only

    @property
    def fragment(self) -> bool:
        return self.body is not None and self.body.lstrip()[:9].lower() != "<!doctype"


@dataclass
class Answers:
    """Everything the live server answered, in order, and the templates it rendered per test."""

    items: list[Answer] = field(default_factory=list)
    templates: dict[str, set[str]] = field(default_factory=dict)
    test: str = "(set-up)"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: Response) -> Response:
        html = response.mimetype == "text/html" and not response.direct_passthrough
        answer = Answer(
            test=self.test,
            method=request.method,
            url=request.full_path.rstrip("?"),
            status=response.status_code,
            mimetype=response.mimetype or "",
            htmx=request.headers.get("HX-Request") == "true",
            body=response.get_data(as_text=True) if html else None,
        )
        with self.lock:
            self.items.append(answer)
        return response

    def rendered(self, _app: Flask, template: Any, **_context: Any) -> None:
        with self.lock:
            self.templates.setdefault(self.test, set()).add(template.name)

    def mark(self) -> int:
        with self.lock:
            return len(self.items)

    def since(self, mark: int) -> list[Answer]:
        with self.lock:
            return list(self.items[mark:])


@dataclass
class LiveServer:
    url: str
    app: Flask
    answers: Answers

    def totp(self, secret: str = seed.DEMO_TOTP_SECRET) -> str:
        """A code for the server's clock, a step after the last one handed out (no replays)."""
        clock = self.app.extensions["portal.clock"]
        clock.advance(timedelta(seconds=30))
        return pyotp.TOTP(secret).at(clock.now())


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The portal on a free loopback port, over its own migrated and seeded SQLite database."""
    folder = tmp_path_factory.mktemp("live")
    url = f"sqlite:///{folder / 'portal.db'}"
    migrate_and_seed(url, folder / "files", date.today())
    app = create_app(
        {
            "env": "testing",
            "secret_key": TEST_SECRET,
            "database_url": url,
            "storage_dir": str(folder / "files"),
            **FAST_ARGON2,
        }
    )
    app.extensions["portal.jobs"] = ManualQueue(app)  # tests run its due work by hand
    answers = Answers()
    app.after_request(answers.record)
    template_rendered.connect(answers.rendered, app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LiveServer(f"http://127.0.0.1:{server.server_port}", app, answers)
    template_rendered.disconnect(answers.rendered, app)
    server.shutdown()
    app.extensions["portal.db"].engine.dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []

    def make(
        width: int = 1280, height: int = 800, scheme: str = "dark", locale: str = "en-US"
    ) -> Any:
        context = browser.new_context(
            viewport={"width": width, "height": height}, color_scheme=scheme, locale=locale
        )
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(autouse=True)
def _fresh_rate_limits(live_server: LiveServer) -> None:
    """Every browser test signs in from 127.0.0.1: start each with the limits' counters at zero."""
    from portal.extensions import limiter

    with live_server.app.app_context():
        limiter.reset()


@pytest.fixture(autouse=True)
def _name_the_answers(live_server: LiveServer, request: pytest.FixtureRequest) -> None:
    live_server.answers.test = request.node.nodeid


# --- The W3C Nu HTML checker, run once over everything the browser tests received -------------

# A document the checker must object to: if it says nothing about this, it is not checking.
_CANARY = '<!doctype html><html lang="en"><head><title>canary</title></head><body><p hx-get="/">'
# A fragment lands in a page with its h1; the wrapper gives it one, so that is not reported.
_WRAP = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>fragment</title></head>'
    "<body><h1>fragment</h1>"
)
_unchecked: list[str] = []
_checked: list[str] = []
LIGHTHOUSE_SUMMARY: list[str] = []  # test_lighthouse.py's scores and timings, for the summary
_warnings: dict[str, int] = {}


@dataclass
class NuMessage:
    kind: str  # "error", "info" (a warning when subType is "warning")
    file: str
    line: int
    column: int
    message: str
    extract: str


def nu_check(documents: dict[str, str]) -> list[NuMessage]:
    """Run vnu.jar once over {file name: HTML}; every message it gives, warnings included."""
    with tempfile.TemporaryDirectory(prefix="nu-") as folder:
        paths = []
        for name, html in documents.items():
            path = Path(folder) / name
            path.write_text(html, encoding="utf-8")
            paths.append(str(path))
        java = shutil.which("java") or "java"
        result = subprocess.run(
            [
                java,
                *JAVA_OPTIONS,
                "-jar",
                str(VNU_JAR),
                "--format",
                "json",
                "--stdout",
                "--exit-zero-always",
                *paths,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError as error:
            raise AssertionError(
                f"the Nu checker gave no report (exit {result.returncode}): "
                f"{result.stderr[-2000:] or result.stdout[-2000:]}"
            ) from error
    messages = []
    for item in report.get("messages", []):
        kind = item.get("type", "")
        if kind == "info" and item.get("subType") == "warning":
            kind = "warning"
        messages.append(
            NuMessage(
                kind=kind,
                file=Path(item.get("url", "")).name,
                line=int(item.get("lastLine", item.get("firstLine", 0)) or 0),
                column=int(item.get("firstColumn", item.get("lastColumn", 0)) or 0),
                message=item.get("message", ""),
                extract=item.get("extract", "").replace("\n", " "),
            )
        )
    return messages


def checker_missing() -> str | None:
    if not VNU_JAR.exists():
        return f"no Nu HTML checker at {VNU_JAR} (`make test-tools` runs `npm ci`)"
    if shutil.which("java") is None:
        return "no java for the Nu HTML checker (apt-get install default-jre-headless)"
    return None


# What differs between two renderings of the same page: CSRF tokens, idempotency keys, the
# sandbox's ids and opaque public ids. The same page seen by many tests is checked once.
_VARYING = re.compile(
    r'(?<=name="csrf_token" value=")[^"]+|(?<="X-CSRFToken": ")[^"]+'
    r'|(?<=name="idempotency_key" value=")[^"]+|\b[a-z]{2,4}_[A-Za-z0-9_-]{16,}'
)


def html_to_check(answers: list[Answer]) -> dict[str, tuple[str, Answer]]:
    """One file per distinct page: {file name: (HTML, the first answer that gave it)}. A
    fragment is wrapped in a minimal document on the same first line, so lines stay its own."""
    files: dict[str, tuple[str, Answer]] = {}
    seen: set[str] = set()
    for answer in answers:
        if answer.body is None or not answer.body.strip():
            continue
        digest = hashlib.sha256(_VARYING.sub("~", answer.body).encode()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        kind = "fragment" if answer.fragment else "page"
        html = _WRAP + answer.body if answer.fragment else answer.body
        files[f"{len(files) + 1:04d}-{kind}.html"] = (html, answer)
    return files


TEMPLATES = ROOT / "portal/templates"
NOT_HTML = ("layouts/", "macros/", "mail/", "pdf/")  # not a page or fragment on their own
_INCLUDE = re.compile(r"""{%-?\s*include\s+["']([^"']+)["']""")
_BROWSER_TESTS = Path(__file__).resolve().parent
_partial_run: list[str] = []


def unseen_templates(rendered: set[str]) -> set[str]:
    """The page and fragment templates that neither were rendered nor are part of one that was;
    what the Nu checker therefore never saw."""
    names = {p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*.html")}
    seen = set(rendered)
    while True:
        included = {
            name
            for parent in seen & names
            for name in _INCLUDE.findall((TEMPLATES / parent).read_text(encoding="utf-8"))
        }
        if included <= seen:
            break
        seen |= included
    return {n for n in names - seen if not n.startswith(NOT_HTML)}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ran = {
        Path(str(item.path)).name for item in items if Path(str(item.path)).parent == _BROWSER_TESTS
    }
    everything = {p.name for p in _BROWSER_TESTS.glob("test_*.py")}
    if ran and ran != everything:
        _partial_run.append("only some browser test files ran")


def pytest_deselected(items: list[pytest.Item]) -> None:
    if any(Path(str(item.path)).parent == _BROWSER_TESTS for item in items):
        _partial_run.append("some browser tests were deselected")


@pytest.fixture(scope="package", autouse=True)
def _nu_checked_html(live_server: LiveServer) -> Iterator[None]:
    """After the last browser test: every page and fragment received, through one checker run
    (a failure shows as an error at the teardown of the last browser test)."""
    yield
    files = html_to_check(live_server.answers.items)
    if not files:
        return
    missing = checker_missing()
    if missing:
        if CI:
            pytest.fail(f"CI=true: {missing}; {len(files)} HTML answers went unchecked")
        _unchecked.append(f"{len(files)} HTML answers not checked: {missing}")
        return
    documents = {name: html for name, (html, _answer) in files.items()}
    documents["canary.html"] = _CANARY
    started = time.monotonic()
    messages = nu_check(documents)
    took = time.monotonic() - started
    if not any(m.file == "canary.html" and m.kind == "error" for m in messages):
        pytest.fail("the Nu checker found nothing wrong with a known-bad document: is it working?")
    errors = []
    pages = sum(1 for _html, answer in files.values() if not answer.fragment)
    _checked.append(
        f"{pages} pages and {len(files) - pages} fragments checked in {took:.1f} s "
        f"(of {sum(1 for a in live_server.answers.items if a.body)} HTML answers)"
    )
    for message in messages:
        if message.file == "canary.html":
            continue
        if message.file not in files:  # about the run itself (say, a file it could not read)
            errors.append(f"{message.kind}: {message.message} ({message.file or 'no file'})")
            continue
        _html, answer = files[message.file]
        where = f"{answer.method} {answer.url} -> {answer.status}"
        where += " (htmx fragment)" if answer.fragment else (" (htmx)" if answer.htmx else "")
        if message.kind == "error":
            errors.append(
                f"{message.file}:{message.line}:{message.column}: {message.message}\n"
                f"    {message.extract!r}\n    {where}, in {answer.test}"
            )
        else:
            _warnings[message.message] = _warnings.get(message.message, 0) + 1
    # With every browser test run, every page and fragment template reached the checker.
    if _partial_run:
        _checked.append(f"not asked whether every template was seen: {_partial_run[0]}")
    else:
        rendered = set().union(*live_server.answers.templates.values())
        unseen = unseen_templates(rendered)
        if unseen:
            errors.append(
                f"no browser test rendered {sorted(unseen)}, so the checker never saw them: "
                "visit them in test_navigation.py's walk"
            )
    if errors:
        shown = "\n".join(errors[:40])
        more = f"\n... and {len(errors) - 40} more" if len(errors) > 40 else ""
        pytest.fail(
            f"the Nu HTML checker found {len(errors)} problem(s) in {len(files)} pages and "
            f"fragments the browser received:\n{shown}{more}",
            pytrace=False,
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _checked:
        terminalreporter.write_line(f"Nu HTML checker: {line}")
    for line in _unchecked:
        terminalreporter.write_line(f"Nu HTML checker: {line}", yellow=True)
    for message, count in sorted(_warnings.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"Nu HTML checker warning ({count}x): {message}")
    for line in LIGHTHOUSE_SUMMARY:
        terminalreporter.write_line(f"Lighthouse: {line}")
