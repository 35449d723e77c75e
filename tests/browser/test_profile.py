"""The profile as people use it: its fields with their inline errors, saving with and without
JavaScript, a refused e-mail link, in English at 1280 px and Arabic at 360 px, with axe watching."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_sign_in import (
    assert_axe_clean,
    sign_in_by_keyboard,
    sign_in_without_javascript,
)
from tests.browser.test_statements import no_sideways_scroll

pytestmark = pytest.mark.browser
SAVE = "form[action$='/portal/profile'] button[type=submit]"


@pytest.mark.parametrize(
    ("email", "width", "scheme", "locale"),
    [
        ("admin@acme.test", 1280, "dark", "en-US"),
        ("admin@globex.test", 360, "light", "ar"),
    ],
)
def test_profile_errors_save_and_a_refused_link(
    live_server: LiveServer, new_page: Any, email: str, width: int, scheme: str, locale: str
) -> None:
    page = new_page(width=width, height=800, scheme=scheme, locale=locale)
    tag = f"{width}-{scheme}-{locale[:2]}"
    sign_in_by_keyboard(page, live_server, email)
    url = f"{live_server.url}/portal/profile"
    page.goto(url)
    if locale == "ar":
        assert page.evaluate("document.documentElement.dir") == "rtl"
    expect(page.locator("#p-timezone optgroup[label='Europe']")).to_have_count(1)
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"profile-{tag}")

    # A phone number that is no number: said beside the field, what was typed kept.
    page.locator("#p-phone").fill("12")
    page.locator("#p-job_title").fill("Controller")
    page.locator(SAVE).click()
    expect(page.locator("#p-phone-error")).to_be_visible()
    expect(page.locator("#p-phone")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#p-job_title")).to_have_value("Controller")
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"profile-errors-{tag}")

    page.locator("#p-phone").fill("+1 415 555 0132")
    with page.expect_navigation(url=url):
        page.locator(SAVE).click()
    expect(page.locator(".flashes")).to_be_visible()
    expect(page.locator("#p-phone")).to_have_value("+1 415-555-0132")
    assert_axe_clean(page)

    # A confirmation link that was altered: a page that says so.
    page.goto(f"{live_server.url}/portal/profile/email/not-a-real-token")
    expect(page.locator("h1")).to_be_visible()
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"profile-link-refused-{tag}")


def test_profile_without_javascript(browser: Any, live_server: LiveServer) -> None:
    context, page = sign_in_without_javascript(browser, live_server)
    page.goto(f"{live_server.url}/portal/profile")
    page.get_by_label("Job title").fill("Treasurer")
    page.get_by_label("Time zone").select_option("America/New_York")
    page.get_by_role("button", name="Save profile").click()
    expect(page.locator(".flashes")).to_contain_text("Profile updated successfully")
    expect(page.get_by_label("Job title")).to_have_value("Treasurer")
    expect(page.get_by_label("Time zone")).to_have_value("America/New_York")
    # Back to UTC: other tests read this user's times.
    page.get_by_label("Time zone").select_option("UTC")
    page.get_by_role("button", name="Save profile").click()
    expect(page.get_by_label("Time zone")).to_have_value("UTC")
    context.close()
