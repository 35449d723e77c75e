"""The API reference page (/api/docs): readable signed out and in, on a desktop and a phone,
with axe watching; no script needed and nothing wider than the screen."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_sign_in import assert_axe_clean, sign_in_by_keyboard

pytestmark = pytest.mark.browser

OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def test_the_api_reference_reads_on_a_desktop_and_a_phone(
    live_server: LiveServer, new_page: Any
) -> None:
    page = new_page()
    page.goto(f"{live_server.url}/api/docs")
    expect(page.locator("h1")).to_have_text("API reference")
    expect(page.get_by_role("link", name="/api/openapi.json")).to_be_visible()
    expect(page.locator("#post--api-portal-payment-title")).to_be_visible()
    assert_axe_clean(page)
    screenshot(page, "api-docs-1280-dark")
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/api/docs")
    assert_axe_clean(page)
    phone = new_page(width=390, height=844, scheme="light")
    phone.goto(f"{live_server.url}/api/docs")
    assert phone.evaluate(OVERFLOW) <= 0
    assert_axe_clean(phone)
    screenshot(phone, "api-docs-390-light")
