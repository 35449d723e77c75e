"""Personal API tokens on /portal/security, as a customer on a phone would use them: by keyboard,
in English and in Arabic, with axe watching; the token is shown once, works, and stops working
when revoked; the table of tokens never makes the page wider than the screen."""

from __future__ import annotations

from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_sign_in import assert_axe_clean, sign_in_by_keyboard

pytestmark = pytest.mark.browser

OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def _dashboard_status(live: LiveServer, token: str) -> int:
    url = f"{live.url}/api/portal/dashboard"
    request = Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urlopen(request, timeout=10) as answer:  # noqa: S310 - the test's own server
            return int(answer.status)
    except HTTPError as error:
        return int(error.code)


@pytest.mark.parametrize("locale", ["en-US", "ar"])
def test_create_use_and_revoke_a_token_by_keyboard_on_a_phone(
    live_server: LiveServer, new_page: Any, locale: str
) -> None:
    page = new_page(width=390, height=844, scheme="light", locale=locale)
    sign_in_by_keyboard(page, live_server, "ap@acme.test")
    page.goto(f"{live_server.url}/portal/security")
    assert page.evaluate("document.documentElement.lang") == locale[:2]
    name = f"Sync {locale}"
    for _ in range(80):  # through the header, the navigation and the sections above
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "tk-name":
            break
    assert page.evaluate("document.activeElement.id") == "tk-name"
    page.keyboard.type(name)
    page.keyboard.press("Enter")  # submits the form (htmx swaps the section)
    shown = page.locator("#new-api-token")
    expect(shown).to_be_visible()
    raw = shown.input_value()
    assert raw.startswith("pt_")
    assert page.evaluate(OVERFLOW) <= 0
    assert_axe_clean(page)
    screenshot(page, f"api-tokens-390-{locale}")
    assert _dashboard_status(live_server, raw) == 200

    page.reload()  # shown once: never again
    expect(page.locator("#new-api-token")).to_have_count(0)
    assert raw not in page.content()
    revoke = page.locator("#api-tokens tbody tr", has_text=name).locator("button")
    revoke.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#api-tokens tbody tr", has_text=name)).to_have_count(0)
    assert page.evaluate(OVERFLOW) <= 0
    assert _dashboard_status(live_server, raw) == 401
