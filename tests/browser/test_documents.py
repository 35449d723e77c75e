"""The documents library as people use it: filters with and without JavaScript, a download, a
phone, Arabic, and the page a refused link gives."""

from __future__ import annotations

import hashlib
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
SETTLED = "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"


def test_the_library_filters_and_downloads(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/documents")
    expect(page.locator("h1")).to_have_text("Documents")
    expect(page.locator("#result-count")).to_have_text("3 documents")
    assert_axe_clean(page)
    screenshot(page, "documents-1280-dark")
    with page.expect_response(lambda r: "type=contract" in r.url):  # the results fragment
        page.get_by_label("Type").select_option("contract")
    page.wait_for_function(SETTLED)
    expect(page.locator("#result-count")).to_have_text("1 document")
    assert "type=contract" in page.url  # pushed: reload and Back keep it
    rows = page.locator(".document-list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("All accounts")
    with page.expect_download() as download:
        rows.first.get_by_role("link", name="Download").click()
    path = download.value.path()
    assert download.value.suggested_filename == "master-services-agreement.pdf"
    assert path is not None
    with open(path, "rb") as handle:
        assert handle.read(5) == b"%PDF-"
        handle.seek(0)
        assert hashlib.sha256(handle.read()).hexdigest()
    page.get_by_label("Search").fill("nothing like this")
    page.wait_for_url("**q=nothing*")
    page.wait_for_function(SETTLED)
    expect(page.locator(".empty-title")).to_have_text("No documents match these filters")
    assert_axe_clean(page)


def test_the_library_without_javascript(browser: Any, live_server: LiveServer) -> None:
    context, page = sign_in_without_javascript(browser, live_server)
    page.goto(f"{live_server.url}/portal/documents")
    page.get_by_label("Type").select_option("delivery_note")
    page.get_by_role("button", name="Apply filters").click()
    assert "type=delivery_note" in page.url
    expect(page.locator(".document-list tbody tr")).to_have_count(1)
    expect(page.locator(".document-title")).to_have_text("Delivery note DN-2003")
    context.close()


@pytest.mark.parametrize(("locale", "scheme"), [("en-US", "light"), ("ar", "dark")])
def test_the_library_on_a_phone(
    live_server: LiveServer, browser: Any, locale: str, scheme: str
) -> None:
    context = browser.new_context(
        viewport={"width": 360, "height": 780}, color_scheme=scheme, locale=locale, has_touch=True
    )
    page = context.new_page()
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/documents")
    cards = page.locator(".document-list tbody tr")
    expect(cards).to_have_count(3)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    for card in cards.all():
        box = card.bounding_box()
        assert box and box["width"] <= 360, box
    link = cards.first.get_by_role("link").last
    size = link.bounding_box()
    assert size and size["height"] >= 44
    assert_axe_clean(page)
    screenshot(page, f"documents-phone-360-{scheme}-{locale[:2]}")
    context.close()


def test_a_refused_link_says_why(live_server: LiveServer, new_page: Any) -> None:
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/download/not-a-real-link")
    expect(page.locator("h1")).to_have_text("Download link not valid")
    assert_axe_clean(page)


def test_an_invoice_shows_its_credit_notes_and_documents(
    live_server: LiveServer, new_page: Any
) -> None:
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/documents?type=credit_note")
    page.get_by_role("link", name="INV-1003").click()
    page.wait_for_url("**/portal/invoices/inv_*")
    expect(page.locator(".totals")).to_contain_text("Credits applied")
    expect(page.locator("[data-figure=credits-applied]")).to_have_text("$120.00")
    assert_axe_clean(page)
    screenshot(page, "invoice-credited-1280-dark")
    with page.expect_download() as download:
        page.locator(".credit-notes").get_by_role("link", name="CN-301").click()
    assert download.value.suggested_filename == "credit-note-cn-301.pdf"
    with page.expect_download() as again:
        page.locator("section[aria-labelledby=docs-title]").get_by_role(
            "link", name="Download"
        ).click()
    assert again.value.suggested_filename == "credit-note-cn-301.pdf"
