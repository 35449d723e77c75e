"""The maintenance page (m25_portal off) in Chromium: English and Arabic, axe-clean, on a phone,
what htmx does with it, and the portal back as it was once the flag is on again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from portal import flags, tenancy
from portal.models import FeatureFlag
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_layout import assert_reads_right
from tests.browser.test_sign_in import assert_axe_clean, sign_in_by_keyboard

pytestmark = pytest.mark.browser


def _switch(live: LiveServer, on: bool) -> None:
    app = live.app
    with app.app_context(), app.extensions["portal.db"].sessionmaker() as session:
        with tenancy.system(session):
            session.merge(FeatureFlag(name=flags.MASTER, enabled=on))
        session.commit()
    flags.cache(app).forget()  # this process: at once, not after FLAGS_REFRESH_SECONDS


@pytest.fixture
def portal_off(live_server: LiveServer) -> Iterator[None]:
    _switch(live_server, False)
    try:
        yield
    finally:
        _switch(live_server, True)


def test_the_maintenance_page_in_english_and_arabic(
    live_server: LiveServer, new_page: Any, portal_off: None
) -> None:
    base = live_server.url
    page = new_page(width=390, height=844)
    answer = page.goto(f"{base}/portal/dashboard")
    assert answer is not None and answer.status == 503
    assert answer.headers["retry-after"] == "300"
    assert page.locator("h1").inner_text() == "The Billing Portal is down for maintenance"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_axe_clean(page)
    screenshot(page, "maintenance-390-en")
    # The keyboard reaches the retry link (after the skip link and the brand).
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Try again"

    arabic = new_page(width=1280, height=844, scheme="light", locale="ar")
    arabic.goto(f"{base}/portal/dashboard")
    assert arabic.locator("h1").inner_text() == "بوابة الفواتير متوقفة للصيانة"
    assert_reads_right(arabic, "maintenance", numbers=False)


def test_htmx_loads_the_whole_maintenance_page_and_the_session_outlives_it(
    live_server: LiveServer, new_page: Any
) -> None:
    base = live_server.url
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{base}/portal/invoices")
    _switch(live_server, False)
    try:
        # A search swaps the result list through htmx; the answer tells htmx to reload instead.
        page.locator("#q").fill("INV-10")
        expect(page.locator("h1")).to_have_text(
            "The Billing Portal is down for maintenance", timeout=10000
        )
        assert page.locator("#invoice-results").count() == 0
    finally:
        _switch(live_server, True)
    page.goto(f"{base}/portal/dashboard")
    assert page.url == f"{base}/portal/dashboard"  # still signed in
    assert page.locator("h1").inner_text().startswith("Welcome")
