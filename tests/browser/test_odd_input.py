"""Refused input in a real browser: the message beside the field, what was typed still there,
axe clean, in English and in Arabic (right to left), on a desktop and on a phone."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_payments import open_invoice
from tests.browser.test_sign_in import assert_axe_clean, sign_in_by_keyboard

pytestmark = pytest.mark.browser


@pytest.mark.parametrize(
    ("width", "scheme", "locale"), [(1280, "dark", "en-US"), (360, "light", "ar")]
)
def test_refused_input_is_explained_beside_the_field(
    live_server: LiveServer, new_page: Any, width: int, scheme: str, locale: str
) -> None:
    page = new_page(width=width, scheme=scheme, locale=locale)
    sign_in_by_keyboard(page, live_server)
    tag = f"{width}-{scheme}-{locale[:2]}"

    answer = page.goto(f"{live_server.url}/portal/payment-history?status=failed&to=9999-12-31")
    assert answer is not None and answer.status == 400
    expect(page.locator("#to-error")).to_be_visible()
    expect(page.locator("#to")).to_have_value("9999-12-31")
    expect(page.locator("#to")).to_have_attribute("aria-invalid", "true")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert_axe_clean(page)
    screenshot(page, f"history-refused-date-{tag}")

    open_invoice(page, live_server, "INV-1003")
    page.locator("a[href$='/dispute']").first.click()
    page.wait_for_url(re.compile(r".*/dispute$"))
    page.locator("#amount").fill("1E+999999999")
    page.locator("#message").fill("The seats never arrived.")
    page.locator("form:has(#amount) button[type=submit]").click()
    expect(page.locator("#amount-error")).to_be_visible()
    expect(page.locator("#amount")).to_have_value("1E+999999999")
    expect(page.locator("#message")).to_have_value("The seats never arrived.")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert_axe_clean(page)
    screenshot(page, f"dispute-refused-amount-{tag}")
