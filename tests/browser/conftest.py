"""A real server on loopback and real Chromium (Debian's /usr/bin/chromium) driven by Playwright."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from flask import Flask
from werkzeug.serving import make_server

from portal import create_app
from portal.services import seed
from tests.conftest import FAST_ARGON2, TEST_SECRET, migrate_and_seed

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


@dataclass
class LiveServer:
    url: str
    app: Flask

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
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LiveServer(f"http://127.0.0.1:{server.server_port}", app)
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
