"""Lighthouse's gate on the pages people use most: performance >= 95, accessibility and best
practices 100, on a phone (Lighthouse's default mobile emulation and simulated slow 4G).

Chromium starts once for the module with a DevTools port; Playwright signs in through the pages
in its default context, and the lighthouse CLI (npm's `lighthouse`, pinned in package.json)
audits each page over that port without resetting storage, so it sees what a signed-in demo user
sees. Each JSON report lands in tests/artifacts/lighthouse-<page>.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from portal.extensions import limiter
from tests.browser.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    LIGHTHOUSE_SUMMARY,
    ROOT,
    LiveServer,
)
from tests.conftest import CI

pytestmark = pytest.mark.browser

LIGHTHOUSE = Path(
    os.environ.get("PORTAL_TEST_LIGHTHOUSE", ROOT / "node_modules/lighthouse/cli/index.js")
)
CATEGORIES = ("performance", "accessibility", "best-practices")
GATE = {"performance": 0.95, "accessibility": 1.0, "best-practices": 1.0}
# The sign-in page first: it is audited signed out, before the sign-in.
PAGES = ("sign-in", "dashboard", "invoice-list", "invoice-detail", "payment-form", "history")


def lighthouse_missing() -> str | None:
    if shutil.which("node") is None:
        return "no node for Lighthouse (apt-get install nodejs npm)"
    if not LIGHTHOUSE.exists():
        return f"no Lighthouse at {LIGHTHOUSE} (`make test-tools` runs `npm ci`)"
    return None


@dataclass
class Chromium:
    """Debian's Chromium with a DevTools port, for Playwright and Lighthouse both."""

    process: subprocess.Popen[bytes]
    port: int


def _devtools_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    """Chromium writes the port it chose (--remote-debugging-port=0) to DevToolsActivePort."""
    announced = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"Chromium exited ({process.returncode}) before it listened")
        lines = announced.read_text().splitlines() if announced.exists() else []
        if lines and lines[0].isdigit():
            return int(lines[0])
        time.sleep(0.05)  # polling a file Chromium writes; there is no event to wait on
    raise AssertionError(f"Chromium wrote no {announced} within 30 s")


@pytest.fixture(scope="module")
def lighthouse() -> Path:
    """The CLI; without it the gate is reported as not run, and under CI=true it fails."""
    missing = lighthouse_missing()
    if missing:
        if CI:
            pytest.fail(f"CI=true: {missing}; the Lighthouse gate did not run")
        pytest.skip(missing)
    return LIGHTHOUSE


def launcher_flags() -> list[str]:
    """The flags Lighthouse's own launcher (chrome-launcher, installed with it) starts Chrome
    with: among them no background tracing and no RenderDocument (both have cost runs their
    trace: "Something went wrong with recording the trace", NO_NAVSTART) and no backgrounding of
    the renderer. Started without them, two runs in about seventy here lost their trace."""
    script = (
        "import {Launcher} from 'chrome-launcher';"
        "console.log(JSON.stringify(Launcher.defaultFlags()))"
    )
    result = subprocess.run(
        [shutil.which("node") or "node", "--input-type=module", "-e", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    flags: list[str] = json.loads(result.stdout)
    return flags


@pytest.fixture(scope="module")
def chromium(lighthouse: Path) -> Iterator[Chromium]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    flags = launcher_flags()
    with tempfile.TemporaryDirectory(prefix="lighthouse-chromium-") as folder:
        profile = Path(folder)
        process = subprocess.Popen(
            [
                CHROMIUM,
                *CHROMIUM_ARGS,
                *(flag for flag in flags if flag not in CHROMIUM_ARGS),
                "--headless",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield Chromium(process, _devtools_port(profile, process))
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _sign_in(context: Any, live: LiveServer) -> dict[str, str]:
    """Sign in as admin@acme.test in `context` (password, then a TOTP code) and find the
    addresses of an open invoice and its payment form; {page: url}."""
    page = context.new_page()
    try:
        page.goto(f"{live.url}/login")
        page.get_by_label("Email").fill("admin@acme.test")
        page.get_by_label("Password").fill("portal-demo-2026")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live.url}/login/mfa")
        page.get_by_label("Authentication code").fill(live.totp())
        page.get_by_role("button", name="Verify").click()
        page.wait_for_url(f"{live.url}/portal/dashboard")
        page.goto(f"{live.url}/portal/invoices?status=open&sort=number")
        detail = page.locator("#invoice-results a[href*='/portal/invoices/inv_']").first
        detail_url = live.url + str(detail.get_attribute("href"))
        page.goto(detail_url)
        payment_url = live.url + str(page.locator("a[data-shortcut=p]").get_attribute("href"))
    finally:
        page.close()
    return {
        "dashboard": f"{live.url}/portal/dashboard",
        "invoice-list": f"{live.url}/portal/invoices",
        "invoice-detail": detail_url,
        "payment-form": payment_url,
        "history": f"{live.url}/portal/payment-history",
    }


RUN_AGAIN = 2  # times a run that lost its trace is started over


def _audit(port: int, name: str, url: str) -> dict[str, Any]:
    """One Lighthouse run on `url` in the Chromium at `port`; its JSON report, also kept in
    tests/artifacts/lighthouse-<name>.json."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"lighthouse-{name}.json"
    started = time.monotonic()
    for attempt in range(1, RUN_AGAIN + 2):
        path.unlink(missing_ok=True)
        result = subprocess.run(
            [
                shutil.which("node") or "node",
                str(LIGHTHOUSE),
                url,
                f"--port={port}",
                "--disable-storage-reset",
                "--output=json",
                f"--output-path={path}",
                "--quiet",
                f"--only-categories={','.join(CATEGORIES)}",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        # A run whose trace Lighthouse lost (NO_NAVSTART and its kin) ends with "Please run
        # Lighthouse again": that says nothing of the page, so it is run again, as it asks.
        if result.returncode == 0 or "run Lighthouse again" not in result.stderr:
            break
        LIGHTHOUSE_SUMMARY.append(f"{name}: Lighthouse lost its trace (run {attempt}), again")
    assert result.returncode == 0 and path.exists(), (
        f"Lighthouse failed on {url} (exit {result.returncode}): {result.stderr[-3000:]}"
    )
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    scores = ", ".join(f"{key} {report['categories'][key]['score']}" for key in CATEGORIES)
    speed = report["environment"]["benchmarkIndex"]
    LIGHTHOUSE_SUMMARY.append(
        f"{name}: {scores} ({time.monotonic() - started:.1f} s, benchmarkIndex {speed})"
    )
    return report


def _performance(report: dict[str, Any]) -> float:
    return float(report["categories"]["performance"]["score"] or 0)


@pytest.fixture(scope="module")
def reports(
    lighthouse: Path, browser: Any, chromium: Chromium, live_server: LiveServer
) -> dict[str, dict[str, Any]]:
    """Every page's report, each on a first visit (the HTTP cache emptied, the cookies kept):
    the sign-in page signed out, then the others signed in. Playwright (the session's, which
    `browser` started) drives the same Chromium over its DevTools port."""
    live_server.answers.test = f"{__name__} (set-up)"
    started = time.monotonic()
    found: dict[str, dict[str, Any]] = {}
    remote = browser.browser_type.connect_over_cdp(f"http://127.0.0.1:{chromium.port}")
    context = remote.contexts[0]
    devtools = context.new_cdp_session(context.pages[0])

    def audit(name: str, url: str) -> None:
        try:
            measure(name, url)
        except AssertionError as error:  # this page's test says so; the others still run
            found[name] = {"portalFailure": str(error)}

    def measure(name: str, url: str) -> None:
        # Lighthouse keeps the cache with the cookies (--disable-storage-reset): empty it, so
        # every page is measured as a first visit, styles and scripts fetched.
        devtools.send("Network.clearBrowserCache")
        first = _audit(chromium.port, name, url)
        if _performance(first) >= GATE["performance"]:
            found[name] = first
            return
        # Simulated throttling multiplies the CPU time this run observed by four, so a machine
        # busy with other work can cost a page its score (Lighthouse's "Variability" guide;
        # benchmarkIndex in each report). As Lighthouse CI does, a miss is measured twice more
        # and the median run is judged: a page that is truly slow misses it too.
        runs = [first]
        for again in (2, 3):
            devtools.send("Network.clearBrowserCache")
            runs.append(_audit(chromium.port, f"{name}-{again}", url))
        runs.sort(key=_performance)
        found[name] = runs[1]
        found[name]["portalRuns"] = [_performance(run) for run in runs]

    try:
        audit("sign-in", f"{live_server.url}/login")
        with live_server.app.app_context():
            limiter.reset()  # the sign-in below counts from zero, whatever ran before
        for name, url in _sign_in(context, live_server).items():
            audit(name, url)
    finally:
        remote.close()
    LIGHTHOUSE_SUMMARY.append(f"six pages audited in {time.monotonic() - started:.1f} s")
    return found


def failing_audits(report: dict[str, Any], category: str) -> list[str]:
    """The audits that cost `category` points, heaviest first: id, title, score, displayValue
    (or, for one that could not run, Lighthouse's error)."""
    audits = report["audits"]
    rows = []
    for ref in sorted(report["categories"][category]["auditRefs"], key=lambda r: -r["weight"]):
        audit = audits[ref["id"]]
        score = audit.get("score")
        mode = audit.get("scoreDisplayMode")
        if mode == "error" and ref["weight"] > 0:
            shown = f"could not run: {audit.get('errorMessage', '')}"
        elif score is None or score >= 1 or mode in ("informative", "notApplicable", "manual"):
            continue
        else:
            shown = f"score {score}" + (
                f", {audit['displayValue']}" if audit.get("displayValue") else ""
            )
        rows.append(f"  {audit['id']} (weight {ref['weight']}): {audit['title']}: {shown}")
        rows.extend(f"      {where}" for where in _examples(audit))
    return rows


def _examples(audit: dict[str, Any], most: int = 3) -> list[str]:
    """What an audit points at, a few items of its details: the element, message or file."""
    found = []
    for item in (audit.get("details") or {}).get("items", [])[:most]:
        node = item.get("node") or {}
        text = node.get("snippet") or item.get("description") or item.get("url") or ""
        if isinstance(text, str) and text:
            found.append(text[:200])
    return found


@pytest.mark.parametrize("name", PAGES)
def test_page_meets_the_lighthouse_gate(reports: dict[str, dict[str, Any]], name: str) -> None:
    report = reports[name]
    assert not report.get("portalFailure"), report.get("portalFailure")
    assert not report.get("runtimeError"), report["runtimeError"]
    assert report["configSettings"]["formFactor"] == "mobile"
    assert report["configSettings"]["throttlingMethod"] == "simulate"
    # Signed in: the page itself was audited, not the sign-in page it would send a stranger to.
    assert report["finalDisplayedUrl"] == report["requestedUrl"], report["finalDisplayedUrl"]
    problems = []
    for category, least in GATE.items():
        score = report["categories"][category]["score"]
        if score is None or score < least:
            problems.append(f"{category} {score} < {least}:")
            problems.extend(failing_audits(report, category))
    runs = report.get("portalRuns")
    measured = f"the median of three runs, performance {runs}" if runs else "one run"
    # Lighthouse's own word on the run, such as a CPU too slow (busy) for its throttling.
    warnings = [f"  (Lighthouse: {warning})" for warning in report.get("runWarnings", [])]
    assert not problems, (
        f"{name} ({report['finalDisplayedUrl']}, {measured}, benchmarkIndex "
        f"{report['environment']['benchmarkIndex']}) misses the Lighthouse gate "
        f"(tests/artifacts/lighthouse-{name}.json):\n" + "\n".join(problems + warnings)
    )
