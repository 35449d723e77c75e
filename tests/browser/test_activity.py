"""The activity log as an admin uses it: filters htmx applies as they are chosen (and a form that
works without JavaScript), in English at 1280 px and Arabic at 360 px, with axe watching."""

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
from tests.browser.test_statements import no_sideways_scroll

pytestmark = pytest.mark.browser


@pytest.mark.parametrize(
    ("email", "width", "scheme", "locale"),
    [
        ("admin@acme.test", 1280, "dark", "en-US"),
        ("admin@globex.test", 360, "dark", "ar"),
    ],
)
def test_the_log_filters_as_you_choose(
    live_server: LiveServer, new_page: Any, email: str, width: int, scheme: str, locale: str
) -> None:
    page = new_page(width=width, height=800, scheme=scheme, locale=locale)
    tag = f"{width}-{scheme}-{locale[:2]}"
    sign_in_by_keyboard(page, live_server, email)
    url = f"{live_server.url}/portal/activity"
    page.goto(url)
    if locale == "ar":
        assert page.evaluate("document.documentElement.dir") == "rtl"
    rows = page.locator("#activity-results tbody tr")
    expect(rows.first).to_be_visible()  # at least this sign-in
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"activity-{tag}")

    # Choosing a kind swaps the results in place and pushes the address.
    with page.expect_response(lambda r: "kind=security" in r.url):
        page.locator("#kind").select_option("security")
    expect(page).to_have_url(re.compile(r"/portal/activity\?.*kind=security"))
    expect(page.locator("#kind")).to_have_value("security")
    expect(rows.first).to_be_visible()
    expect(page.locator("#activity-csv")).to_have_attribute(
        "href", "/portal/activity.csv?kind=security"
    )
    no_sideways_scroll(page, width)
    assert_axe_clean(page)

    # A kind with nothing in it: the empty state offers to clear the filters.
    page.goto(f"{url}?kind=disputes&from=2099-01-01")
    expect(page.locator("#activity-results .empty")).to_have_count(1)
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"activity-empty-{tag}")


def test_the_log_without_javascript(browser: Any, live_server: LiveServer) -> None:
    context, page = sign_in_without_javascript(browser, live_server)
    page.goto(f"{live_server.url}/portal/activity")
    page.get_by_label("Kind of activity").select_option("security")
    page.get_by_role("button", name="Apply filters").click()
    expect(page).to_have_url(f"{live_server.url}/portal/activity?user=&kind=security&from=&to=")
    rows = page.locator("#activity-results tbody tr")
    # Signing in is two steps, each its own row: the code last, the password before it.
    expect(rows.first).to_contain_text("Two-step verification passed")
    expect(rows.nth(1)).to_contain_text("Signed in")
    context.close()
