"""The invoice pages as people use them: keyboard, phone, screen reader checks, RTL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_sign_in import (
    assert_axe_clean,
    sign_in_by_keyboard,
    sign_in_without_javascript,
)

pytestmark = pytest.mark.browser
DETAIL = re.compile(r".*/portal/invoices/inv_[\w-]+$")


def test_keyboard_list_to_detail_to_download(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/invoices")
    assert_axe_clean(page)
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("INV-10")
    page.wait_for_url("**/portal/invoices?*q=INV-10*")  # pushed: reload and back keep it
    page.wait_for_load_state("networkidle")
    expect(page.locator("#result-count")).to_contain_text("13 invoices")
    page.keyboard.press("ArrowDown")  # from the search field to the first result
    first = page.evaluate("document.activeElement.textContent")
    page.keyboard.press("ArrowDown")
    second = page.evaluate("document.activeElement.textContent")
    assert first != second and second.startswith("INV-10")
    page.keyboard.press("Enter")
    page.wait_for_url(DETAIL)
    assert page.locator("h1").inner_text() == f"Invoice {second}"
    assert_axe_clean(page)
    with page.expect_download() as download:
        page.keyboard.press("d")
    assert download.value.suggested_filename == f"invoice-{second}.pdf"
    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_visible()
    assert_axe_clean(page)
    page.keyboard.press("Escape")
    assert not page.locator("#shortcuts").is_visible()


def test_filters_work_without_javascript(browser: Any, live_server: LiveServer) -> None:
    context, page = sign_in_without_javascript(browser, live_server)
    page.goto(f"{live_server.url}/portal/invoices")
    page.get_by_label("Status").select_option("paid")
    page.get_by_role("button", name="Apply filters").click()
    assert "status=paid" in page.url
    badges = page.locator(".invoice-table .badge").all_inner_texts()
    assert badges and set(badges) == {"Paid"}
    context.close()


@pytest.mark.parametrize(
    ("width", "scheme", "locale"),
    [(1280, "dark", "en-US"), (360, "light", "en-US"), (1280, "light", "ar"), (360, "dark", "ar")],
)
def test_pages_in_each_layout(
    live_server: LiveServer, new_page: Any, width: int, scheme: str, locale: str
) -> None:
    page = new_page(width=width, height=800, scheme=scheme, locale=locale)
    sign_in_by_keyboard(page, live_server)
    tag = f"{width}-{scheme}-{locale[:2]}"
    if locale == "ar":
        assert page.evaluate("document.documentElement.dir") == "rtl"
    for name, path in (("dashboard", "/portal/dashboard"), ("invoices", "/portal/invoices")):
        page.goto(f"{live_server.url}{path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert_axe_clean(page)
        screenshot(page, f"{name}-{tag}")
    for target in page.locator(".select-target, .row-link, .pagination a").all()[:20]:
        box = target.bounding_box()
        assert box["height"] >= 44, "touch targets are at least 44 px tall"
    page.locator(".row-link").first.click()
    page.wait_for_url(DETAIL)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert_axe_clean(page)
    screenshot(page, f"invoice-{tag}")


def test_dispute_form_by_keyboard(live_server: LiveServer, new_page: Any) -> None:
    page = new_page(width=390, height=844)
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/invoices?status=open&sort=number")
    page.locator(".row-link").first.click()
    page.wait_for_url(DETAIL)
    page.get_by_role("link", name="Dispute").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/dispute$"))
    assert_axe_clean(page)
    page.get_by_role("button", name="Send dispute").focus()
    page.keyboard.press("Enter")
    assert "Tell us what is wrong" in page.locator(".field-error").inner_text()
    assert_axe_clean(page)
    screenshot(page, "dispute-390-dark")
