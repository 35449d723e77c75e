"""Moving around: Back and Forward after htmx filtering."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_sign_in import (
    assert_axe_clean,
    sign_in_by_keyboard,
    sign_in_without_javascript,
)

pytestmark = pytest.mark.browser

# What a person sees of the invoice list, read from the live DOM.
LIST_STATE = """() => {
  const all = (selector) => Array.from(document.querySelectorAll(selector));
  const one = (selector) => document.querySelector(selector);
  return {
    url: location.pathname + location.search,
    title: document.title,
    h1: all("h1").map((e) => e.textContent.trim()),
    chrome: {
      html: document.getElementsByTagName("html").length,
      body: document.getElementsByTagName("body").length,
      head: document.getElementsByTagName("head").length,
      main: all("main").length,
      header: all("header.site-header").length,
      nav: all("nav.site-nav").length,
      skip: all("a.skip-link").length,
      filters: all("form.filters").length,
      results: all("#invoice-results").length,
      count: all("#result-count").length,
      footer: all("footer.site-footer").length,
    },
    navCurrent: all(".site-nav [aria-current]").map(
      (a) => a.textContent.trim() + "=" + a.getAttribute("aria-current")),
    q: one("#q") && one("#q").value,
    status: one("#status") && one("#status").value,
    count: one("#result-count") && one("#result-count").textContent.trim(),
    rows: all("table[data-rows] .row-link").map((a) => a.textContent.trim()),
    currentPage: (one(".pagination [aria-current=page]") || {}).textContent || "1",
    focus: document.activeElement ? document.activeElement.tagName : null,
    focusInPage: !!document.activeElement && document.activeElement.isConnected,
    scrollY: window.scrollY,
    maxScroll: document.documentElement.scrollHeight - window.innerHeight,
  };
}"""
WHOLE_PAGE = {
    "html": 1,
    "body": 1,
    "head": 1,
    "main": 1,
    "header": 1,
    "nav": 1,
    "skip": 1,
    "filters": 1,
    "results": 1,
    "count": 1,
    "footer": 1,
}
SETTLED = "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"


def list_state(page: Any) -> dict[str, Any]:
    page.wait_for_function(SETTLED)
    return dict(page.evaluate(LIST_STATE))


def assert_whole_list_page(
    state: dict[str, Any], expected: dict[str, Any], focus: str | None = None
) -> None:
    """The state is the invoice list page, whole, showing what `expected` showed."""
    assert state["chrome"] == WHOLE_PAGE, state
    assert state["h1"] == ["Invoices"], state
    assert state["title"] == "Invoices · Billing Portal"
    assert state["navCurrent"] == ["Invoices=page"], state
    for key in ("url", "q", "status", "count", "rows", "currentPage"):
        assert state[key] == expected[key], (key, state, expected)
    # Focus is on something still in the page; the scroll position is within the page.
    assert state["focusInPage"], state
    assert focus is None or state["focus"] == focus, state
    assert 0 <= state["scrollY"] <= max(0, state["maxScroll"]), state


def go(page: Any, direction: str) -> None:
    """Back or Forward to a page htmx pushed: htmx asks the server for it again (it keeps no
    snapshots), marking the request as a history restore."""
    with page.expect_response(
        lambda r: r.request.headers.get("hx-history-restore-request") == "true"
    ) as restore:
        page.go_back() if direction == "back" else page.go_forward()
    assert restore.value.status == 200


def test_back_and_forward_after_filtering_show_whole_pages(
    live_server: LiveServer, new_page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filter, search, page (each an htmx swap that pushes its URL), then Back, Back, Forward,
    reload, leave for an invoice and come back: every step is the whole page for its URL."""
    monkeypatch.setattr("portal.services.invoices.PAGE_SIZE", 3)  # the seed's list has pages
    page = new_page(height=600)
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/invoices")
    everything = list_state(page)

    page.get_by_label("Status").select_option("overdue")
    page.wait_for_url(re.compile(r".*status=overdue.*"))
    filtered = list_state(page)
    page.get_by_label("Search").fill("INV-1")
    page.wait_for_url(re.compile(r".*status=overdue.*q=INV-1.*|.*q=INV-1.*status=overdue.*"))
    searched = list_state(page)
    page.get_by_role("navigation", name="Invoice pages").get_by_role("link", name="2").click()
    page.wait_for_url(re.compile(r".*page=2.*"))
    paged = list_state(page)

    # Each step showed something else, and what it asked for.
    states = [everything, filtered, searched, paged]
    assert len({s["url"] for s in states}) == 4
    assert len({(s["count"], tuple(s["rows"])) for s in states}) == 4
    assert (filtered["status"], searched["q"], paged["currentPage"]) == ("overdue", "INV-1", "2")
    assert searched["status"] == paged["status"] == "overdue" and paged["q"] == "INV-1"
    for state in states:
        assert_whole_list_page(state, state)
    # Paging moved focus into the new results, not onto the page's body.
    assert page.evaluate("document.activeElement.className") == "row-link"

    # A restored page starts like a loaded one: focus at the top of the document (the next
    # Tab reaches the skip link), scrolled where the person left it, as the browser does.
    go(page, "back")
    assert_whole_list_page(list_state(page), searched, focus="BODY")
    go(page, "back")
    assert_whole_list_page(list_state(page), filtered, focus="BODY")
    screenshot(page, "history-back-1280-dark")
    go(page, "forward")
    assert_whole_list_page(list_state(page), searched, focus="BODY")
    go(page, "forward")
    assert_whole_list_page(list_state(page), paged, focus="BODY")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    go(page, "back")
    go(page, "back")
    go(page, "back")
    assert_whole_list_page(list_state(page), everything, focus="BODY")

    # Still working after a restore: filtering again swaps only the results.
    page.get_by_label("Status").select_option("overdue")
    page.wait_for_url(re.compile(r".*status=overdue.*"))
    assert_whole_list_page(
        list_state(page), filtered | {"url": page.evaluate("location.pathname + location.search")}
    )
    assert_axe_clean(page)

    page.reload()
    assert_whole_list_page(list_state(page), filtered | {"url": list_state(page)["url"]})

    # Leave for an invoice (a real navigation) and come back with Back: the browser loads the
    # list again itself; the answer it may have cached for htmx must not be shown.
    page.get_by_label("Search").fill("INV-1")
    page.wait_for_url(re.compile(r".*q=INV-1.*"))
    page.locator(".row-link").first.click()
    page.wait_for_url(re.compile(r".*/portal/invoices/inv_[\w-]+$"))
    page.go_back()
    page.wait_for_url(re.compile(r".*q=INV-1.*"))
    assert_whole_list_page(list_state(page), searched | {"url": list_state(page)["url"]})
    page.go_forward()
    page.wait_for_url(re.compile(r".*/portal/invoices/inv_[\w-]+$"))
    assert page.locator("h1").inner_text().startswith("Invoice INV-1")


def test_back_and_forward_without_javascript(
    browser: Any, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("portal.services.invoices.PAGE_SIZE", 3)
    context, page = sign_in_without_javascript(browser, live_server)
    page.goto(f"{live_server.url}/portal/invoices")
    everything = page.evaluate(LIST_STATE)
    page.get_by_label("Status").select_option("overdue")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r".*status=overdue.*"))
    filtered = page.evaluate(LIST_STATE)
    page.get_by_label("Search").fill("INV-1")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r".*q=INV-1.*"))
    searched = page.evaluate(LIST_STATE)
    page.get_by_role("navigation", name="Invoice pages").get_by_role("link", name="2").click()
    page.wait_for_url(re.compile(r".*page=2.*"))
    paged = page.evaluate(LIST_STATE)
    assert (filtered["status"], searched["q"], paged["currentPage"]) == ("overdue", "INV-1", "2")
    assert (
        len({(s["count"], tuple(s["rows"])) for s in (everything, filtered, searched, paged)}) == 4
    )
    for expected, move in (
        (searched, page.go_back),
        (filtered, page.go_back),
        (searched, page.go_forward),
        (searched, page.reload),
        (paged, page.go_forward),
    ):
        move()
        assert_whole_list_page(page.evaluate(LIST_STATE), expected)
    context.close()
