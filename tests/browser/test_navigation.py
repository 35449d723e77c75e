"""Moving around: Back and Forward after htmx filtering, where the menu says you are, keyboard
shortcuts, and every page answering without an error (its icon included)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LiveServer, screenshot, unseen_templates
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


def test_every_portal_page_belongs_to_a_menu_section(live_server: LiveServer) -> None:
    """So a new page under /portal cannot leave the menu pointing nowhere."""
    from portal.templating import nav_section

    pages = [
        rule.endpoint
        for rule in live_server.app.url_map.iter_rules()
        if rule.rule.startswith("/portal") and "GET" in (rule.methods or ())
    ]
    assert len(pages) > 10
    assert [endpoint for endpoint in pages if nav_section(endpoint) is None] == []
    assert nav_section("payments.new") == "invoices.index"
    assert nav_section("payments.show") == "payments.history"
    assert nav_section("disputes.new") == "invoices.index"


NAV_MARKS = """() => Array.from(document.querySelectorAll(".site-nav a")).filter(
  (a) => a.hasAttribute("aria-current")).map((a) => a.textContent.trim() + "=" + a.getAttribute(
  "aria-current"))"""


def test_the_menu_marks_the_section_of_every_page(live_server: LiveServer, new_page: Any) -> None:
    """aria-current="page" on the entry of the page itself; "true" on the entry whose section a
    page belongs to (an invoice, its dispute and paying it: Invoices; a payment: Payment
    History), marked as visibly as the page's own entry."""
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    base = live_server.url

    def marks() -> list[str]:
        return list(page.evaluate(NAV_MARKS))

    assert marks() == ["Dashboard=page"]
    for path, mark in (
        ("/portal/invoices?status=open", "Invoices=page"),
        ("/portal/payment-history", "Payment History=page"),
        ("/portal/payment-methods", "Payment methods=page"),
        ("/portal/security", "Security=page"),
    ):
        page.goto(f"{base}{path}")
        assert marks() == [mark], path
    page.goto(f"{base}/portal/invoices?status=open&sort=number")
    page.locator(".row-link").first.click()
    page.wait_for_url(re.compile(r".*/portal/invoices/inv_[\w-]+$"))
    assert marks() == ["Invoices=true"]
    style = page.evaluate(
        """() => Array.from(document.querySelectorAll(".site-nav a")).map((a) => {
             const s = getComputedStyle(a);
             return [a.textContent.trim(), s.boxShadow, s.fontWeight, s.backgroundColor];
           })"""
    )
    marked = next(s for s in style if s[0] == "Invoices")
    for other in (s for s in style if s[0] != "Invoices"):
        assert marked[1:] != other[1:] and marked[1] != "none", (marked, other)
    assert_axe_clean(page)
    screenshot(page, "nav-section-invoice-1280-dark")
    detail = page.url
    page.get_by_role("link", name="Dispute").click()
    page.wait_for_url(re.compile(r".*/dispute$"))
    assert marks() == ["Invoices=true"]
    page.goto(detail)
    page.get_by_role("link", name="Pay Now").click()
    expect(page.locator("h1")).to_have_text("Make Payment")
    assert marks() == ["Invoices=true"]
    page.get_by_role("button", name="Review payment").click()
    expect(page.locator("#confirm-title")).to_be_visible()
    assert marks() == ["Invoices=true"]
    page.goto(f"{base}/portal/payment-history")
    page.locator("a[href*='/portal/payments/pay_']").first.click()
    page.wait_for_url(re.compile(r".*/portal/payments/pay_[\w-]+$"))
    assert marks() == ["Payment History=true"]
    assert_axe_clean(page)
    page.goto(f"{base}/portal/invoices/inv_missing")  # an error page keeps its section
    assert marks() == ["Invoices=true"]


def test_the_menu_marks_sections_without_javascript(browser: Any, live_server: LiveServer) -> None:
    context, page = sign_in_without_javascript(browser, live_server)
    page.goto(f"{live_server.url}/portal/invoices?status=open&sort=number")
    page.locator(".row-link").first.click()
    page.get_by_role("link", name="Pay Now").click()
    expect(page.locator("h1")).to_have_text("Make Payment")  # the click only starts the load
    assert page.evaluate(NAV_MARKS) == ["Invoices=true"]
    page.get_by_role("button", name="Review payment").click()  # a POST, answered in full
    expect(page.locator("#confirm-title")).to_be_visible()
    assert page.evaluate(NAV_MARKS) == ["Invoices=true"]
    context.close()


SHORTCUTS_SHOWN = """() => Array.from(document.querySelectorAll("#shortcuts .shortcut-list > div"))
  .filter((group) => getComputedStyle(group).display !== "none")  // each is display: contents
  .map((group) => group.querySelector("dt").textContent.replace(/\\s+/g, " ").trim() + ": " +
       Array.from(group.querySelectorAll("dd")).filter((dd) => dd.checkVisibility())
         .map((dd) => dd.textContent.trim()).join(" | "))"""


def shortcuts_shown(page: Any) -> list[str]:
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_visible()
    shown = list(page.evaluate(SHORTCUTS_SHOWN))
    page.keyboard.press("Escape")
    expect(page.locator("#shortcuts")).to_be_hidden()
    return shown


def test_list_shortcuts_act_on_the_row_in_focus_or_the_selection(
    live_server: LiveServer, new_page: Any
) -> None:
    page = new_page()
    sign_in_by_keyboard(page, live_server)
    base = live_server.url
    page.goto(f"{base}/portal/invoices?status=open&sort=number")
    numbers = page.locator(".row-link").all_inner_texts()
    assert len(numbers) >= 3

    # Typing is typing: p, d and ? go into the search box, nothing else happens.
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.press("Control+a")
    page.keyboard.type("pd?")
    assert page.locator("#q").input_value() == "pd?"
    assert (
        page.url.startswith(f"{base}/portal/invoices")
        and not page.locator("#shortcuts").is_visible()
    )
    page.keyboard.press("Control+a")
    with page.expect_response(lambda r: "q=&" in r.url):  # the search, cleared
        page.keyboard.press("Backspace")
    page.wait_for_function(SETTLED)
    expect(page.locator(".row-link")).to_have_count(len(numbers))

    # d on the row in focus downloads that invoice; p pays it.
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.textContent") == numbers[1]
    with page.expect_download() as download:
        page.keyboard.press("d")
    assert download.value.suggested_filename == f"invoice-{numbers[1]}.pdf"
    page.keyboard.press("p")
    # (After a download Playwright's wait_for_url waits for a load that never comes.)
    expect(page).to_have_url(re.compile(r".*/portal/payment\?invoice=inv_[\w-]+$"))
    expect(page.locator("h1")).to_have_text("Make Payment")
    assert page.locator(".pay-table tbody th").all_inner_texts() == [numbers[1]]
    page.go_back()
    page.wait_for_url(re.compile(r".*/portal/invoices\?.*"))

    # With rows ticked (by keyboard), p and d act on the selection, wherever focus is.
    page.keyboard.press("/")
    page.keyboard.press("ArrowDown")  # the first row's link
    page.keyboard.press("Shift+Tab")  # its checkbox
    page.keyboard.press("Space")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")  # the third row
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Space")
    assert page.locator("input.row-select:checked").count() == 2
    page.keyboard.press("Tab")  # back on the third row's link
    with page.expect_download() as download:
        page.keyboard.press("d")
    assert download.value.suggested_filename.endswith(".zip")
    page.keyboard.press("p")
    expect(page).to_have_url(
        re.compile(r".*/portal/payment\?invoice=inv_[\w-]+&invoice=inv_[\w-]+$")
    )
    assert sorted(page.locator(".pay-table tbody th").all_inner_texts()) == sorted(
        [numbers[0], numbers[2]]
    )

    # A row with nothing to pay: p does nothing; the list says what works on it.
    page.goto(f"{base}/portal/invoices?status=paid")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("p")
    page.wait_for_timeout(300)
    assert page.url == f"{base}/portal/invoices?status=paid"
    assert shortcuts_shown(page) == [
        "/: Search invoices",
        "↑ ↓: Move between invoices in a list",
        "Enter: Open the invoice",
        "p: Pay the selected invoices, or the invoice in focus",
        "d: Download the selected invoices, or the invoice in focus, as PDF",
        "Esc: Close a dialog",
        "?: Show this list",
    ]
    page.keyboard.press("?")
    assert_axe_clean(page)
    screenshot(page, "shortcuts-list-1280-dark")
    page.keyboard.press("Escape")


def test_the_shortcut_list_shows_what_works_on_each_page(
    live_server: LiveServer, new_page: Any
) -> None:
    page = new_page(locale="ar")
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/invoices?status=open&sort=number")
    page.locator(".row-link").first.click()
    page.wait_for_url(re.compile(r".*/portal/invoices/inv_[\w-]+$"))
    shown = shortcuts_shown(page)
    assert [line.split(":")[0] for line in shown] == ["p", "d", "Esc", "?"]
    page.keyboard.press("?")
    assert_axe_clean(page)
    screenshot(page, "shortcuts-invoice-1280-dark-ar")
    page.keyboard.press("Escape")
    page.goto(f"{live_server.url}/portal/security")
    assert [line.split(":")[0] for line in shortcuts_shown(page)] == ["Esc", "?"]


def assert_has_icon(page: Any) -> None:
    icon = page.locator("link[rel~=icon]")
    assert icon.count() == 1, f"{page.url} declares no icon: the browser asks for /favicon.ico"
    href = icon.get_attribute("href")
    assert page.request.get(urljoin(page.url, href)).status == 200, href


def test_every_page_answers_without_an_error_and_has_its_icon(
    live_server: LiveServer, new_page: Any
) -> None:
    """A walk through every page and fragment (so the Nu checker sees each of them): nothing
    the browser asks for (styles, scripts, the icon the browser fetches itself) answers 4xx or
    5xx, and every page names its icon."""
    base = live_server.url
    answers = live_server.answers
    start = answers.mark()
    page = new_page()
    for path in ("/login", "/password/forgot"):
        page.goto(f"{base}{path}")
        assert_has_icon(page)
    sign_in_by_keyboard(page, live_server)
    assert_has_icon(page)

    def visit(path: str) -> None:
        page.goto(f"{base}{path}")
        assert_has_icon(page)

    visit("/portal/invoices")
    with page.expect_response(lambda r: "status=open" in r.url):  # the results fragment
        page.get_by_label("Status").select_option("open")
    page.wait_for_function(SETTLED)
    page.locator(".row-link").first.click()
    page.wait_for_url(re.compile(r".*/portal/invoices/inv_[\w-]+$"))
    assert_has_icon(page)
    invoice = page.url
    page.get_by_role("link", name="Dispute").click()
    page.wait_for_url(re.compile(r".*/dispute$"))
    assert_has_icon(page)
    visit(invoice.removeprefix(base))
    page.get_by_role("link", name="Pay Now").click()
    expect(page.locator("h1")).to_have_text("Make Payment")
    assert_has_icon(page)
    page.get_by_role("button", name="Review payment").click()
    expect(page.locator("#confirm-title")).to_be_visible()
    visit("/portal/payment-history?status=succeeded")
    page.locator("a[href*='/portal/payments/pay_']").first.click()
    page.wait_for_url(re.compile(r".*/portal/payments/pay_[\w-]+$"))
    assert_has_icon(page)
    visit("/portal/payment-history?status=processing")
    with page.expect_response(  # it polls itself
        lambda r: r.request.headers.get("hx-target") == "payment-panel"
    ):
        page.locator("a[href*='/portal/payments/pay_']").first.click()
    assert_has_icon(page)
    for kind in ("Add a card", "Add a bank account"):
        visit("/portal/payment-methods")
        page.get_by_role("button", name=kind).click()
        page.wait_for_url(re.compile(r".*/sandbox/setup/sbs_[\w-]+$"))
        assert_has_icon(page)
        screenshot(page, f"sandbox-{kind.split()[-1]}-1280-dark")
    visit("/portal/documents")
    with page.expect_response(lambda r: "type=contract" in r.url):  # the results fragment
        page.get_by_label("Type").select_option("contract")
    page.wait_for_function(SETTLED)
    visit("/portal/statements")
    visit("/portal/security")
    visit("/portal/users")
    page.locator("tr", has_text="ap@acme.test").get_by_role("link").first.click()
    page.wait_for_url(re.compile(r".*/portal/users/usr_[\w-]+$"))
    assert_has_icon(page)
    page.get_by_role("link", name="Sign out everywhere").click()
    page.wait_for_url(re.compile(r".*/end-sessions$"))
    assert_has_icon(page)
    visit("/portal/profile")
    visit("/portal/notifications")
    visit("/portal/notifications/inbox")
    visit("/portal/autopay")
    visit("/portal/activity")
    with page.expect_response(lambda r: "kind=security" in r.url):  # the results fragment
        page.get_by_label("Kind of activity").select_option("security")
    page.wait_for_function(SETTLED)
    visit("/api/docs")  # the API reference: the portal's layout, no script needed
    page.wait_for_timeout(1000)  # the browser asks for an undeclared icon after the load

    failed = [f"{a.status} {a.method} {a.url}" for a in answers.since(start) if a.status >= 400]
    assert failed == []

    # Errors are answers too: a missing page, an htmx request that fails (its fragment), a
    # payment that cannot be made, a spent reset link, a download link that opens nothing.
    visit("/portal/invoices/inv_missing")
    expect(page.locator("h1")).to_have_text("Not found")
    visit("/portal/invoices")
    with page.expect_response(lambda r: r.url.endswith("/portal/invoices/inv_missing")):
        page.evaluate(
            "htmx.ajax('GET', '/portal/invoices/inv_missing', {target: '#invoice-results'})"
        )
    expect(page.locator("#invoice-results .error-fragment")).to_contain_text("Invoice not found.")
    visit("/portal/invoices?status=paid")
    paid = page.locator("input.row-select").first.get_attribute("value")
    visit(f"/portal/payment?invoice={paid}")
    visit("/password/reset/not-a-real-token")
    visit("/portal/download/not-a-real-link")
    visit("/invitations/not-a-real-invitation")
    visit("/portal/profile/email/not-a-real-link")
    visit("/unsubscribe/not-a-real-link")
    visit("/autopay/skip/not-a-real-link")
    visit("/security/not-me/not-a-real-link")

    # Every page and fragment this walk can reach was rendered (the enrolment pages are
    # test_sign_in's, a group's pages need a payment made: test_payments'; so is the confirm
    # step as a whole page, without JavaScript: here htmx swaps its panel; a dispute's
    # conversation needs a dispute opened: test_disputes'; the maintenance page needs the
    # portal switched off: test_maintenance'; "This wasn't me" needs a real alert's link:
    # test_security_alerts'); with all browser tests, conftest checks that none was left out.
    rendered = answers.templates.get(answers.test, set())
    elsewhere = {
        "auth/mfa_setup.html",
        "auth/recovery_codes.html",
        "payments/group.html",
        "payments/_group_status.html",
        "payments/confirm.html",
        "disputes/show.html",
        "disputes/withdraw.html",
        "errors/maintenance.html",
        "security_alerts/not_me.html",
    }
    assert unseen_templates(rendered) <= elsewhere
