"""Layout as people see it: amounts that fit their cells, rows that line up, Arabic that reads
right, the invoice list on a phone, and printing."""

from __future__ import annotations

import io
import re
from typing import Any

import pypdf
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ARTIFACTS, LiveServer, screenshot
from tests.browser.test_sign_in import (
    assert_axe_clean,
    sign_in_by_keyboard,
    sign_in_without_javascript,
)

pytestmark = pytest.mark.browser


def invoice_path(page: Any, live: LiveServer, number: str) -> str:
    page.goto(f"{live.url}/portal/invoices?q={number}")
    href = page.locator(".row-link", has_text=number).first.get_attribute("href")
    assert href
    return str(href)


def public_id(page: Any, live: LiveServer, number: str) -> str:
    return invoice_path(page, live, number).rsplit("/", 1)[1]


# An amount's error on Make Payment -----------------------------------------------------------


def assert_error_fits_its_cell(page: Any, pid: str, width: int) -> None:
    measured = page.evaluate(
        """(pid) => {
          const error = document.getElementById(`amount-${pid}-error`);
          const input = document.getElementById(`amount-${pid}`);
          const cell = input.closest("td"), wrap = input.closest(".table-wrap");
          const r = (e) => e.getBoundingClientRect();
          return {error: r(error), input: r(input), cell: r(cell), wrap: r(wrap),
                  clipped: error.scrollWidth > error.clientWidth,
                  scrolls: wrap.scrollWidth > wrap.clientWidth};
        }""",
        pid,
    )
    assert not measured["clipped"] and not measured["scrolls"], (width, measured)
    for part in ("error", "input"):
        inner = measured[part]
        for outer in ("cell", "wrap"):
            assert inner["left"] >= measured[outer]["left"] - 0.5, (width, part, measured)
            assert inner["right"] <= measured[outer]["right"] + 0.5, (width, part, measured)
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_an_amount_error_wraps_inside_its_cell(live_server: LiveServer, new_page: Any) -> None:
    page = new_page(width=1280, height=844, scheme="light")
    sign_in_by_keyboard(page, live_server)
    pid = public_id(page, live_server, "INV-1013")
    page.goto(f"{live_server.url}/portal/payment?invoice={pid}")
    page.locator(f"#amount-{pid}").fill("99999")
    page.get_by_role("button", name="Review payment").click()
    error = page.locator(f"#amount-{pid}-error")
    expect(error).to_be_visible()
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 844})
        assert_error_fits_its_cell(page, pid, width)
        screenshot(page, f"payment-amount-error-{width}-en")
    # The amount sits between Unicode isolates (LRI … PDI) so it reads whole in RTL too.
    expect(error).to_have_text(
        re.compile(
            r"^That is more than the \u2066\$[\d,]+\.\d\d\u2069 you can pay on this invoice\.$"
        )
    )
    assert_axe_clean(page)


# The invoice list on a wide screen: rows that line up, filters open -------------------------


def test_a_wide_invoice_list_lines_up_with_its_filters_open(
    live_server: LiveServer, new_page: Any
) -> None:
    page = new_page(width=1280, height=800, scheme="light")
    sign_in_by_keyboard(page, live_server)
    page.goto(f"{live_server.url}/portal/invoices?status=overdue&sort=number")
    misaligned = page.evaluate(
        """() => [...document.querySelectorAll(".invoice-table tbody tr")].flatMap((row) => {
          const r = row.getBoundingClientRect();
          return [...row.children].filter((cell) => {
            const c = cell.getBoundingClientRect();
            return getComputedStyle(cell).display !== "table-cell"
              || Math.abs(c.top - r.top) > 0.5 || Math.abs(c.bottom - r.bottom) > 0.5;
          }).map((cell) => cell.className || cell.tagName);
        })"""
    )
    assert page.locator(".invoice-table tbody tr").count() > 1 and misaligned == []
    # Room enough: the filters are simply there, no summary to open first.
    expect(page.locator(".filter-summary")).to_be_hidden()
    for field in ("#q", "#status", "#from", "#to", "#sort"):
        expect(page.locator(field)).to_be_visible()
    assert_axe_clean(page)
    screenshot(page, "invoices-wide-1280-light")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "invoices-wide-1280-dark")


# Arabic: amounts, numbers and dates read right on every page ---------------------------------

# Finds amounts and dates that are not isolated, and isolated ones that do not read in their
# own order: an amount left to right exactly as written (so "US$" stays whole and next to its
# number), a right-to-left date with its numbers read from the right.
BIDI_PROBLEMS = r"""() => {
  const MARKS = /[\u200e\u200f\u061c\u2066-\u2069]/;
  const AMOUNT = /\d[\d,.]*[\u00a0\u202f ]?(US\$|€|\$)|(US\$|€|\$)[\u00a0 ]?\d/;
  const DATE = /\d{1,4}\u200f?[/.]\d{1,2}\u200f?[/.]\d{2,4}|[A-Z][a-z]{2} \d{1,2}, \d{4}/;
  const ISOLATED = /[\u2066-\u2068][^\u2069]*\u2069/g;
  const problems = [];
  const texts = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = texts.nextNode(); node; node = texts.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest("svg, script, style, option") || parent.closest("bdi")) continue;
    if (!parent.checkVisibility()) continue;
    const bare = node.data.replace(ISOLATED, "");
    if (AMOUNT.test(bare) || DATE.test(bare)) problems.push(`not isolated: ${node.data.trim()}`);
  }
  const visual = (element) => {
    const chars = [];
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (let i = 0; i < node.data.length; i++) {
        if (MARKS.test(node.data[i])) continue;
        const range = document.createRange();
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const r = range.getBoundingClientRect();
        if (r.width > 0) chars.push([r.left + r.width / 2, node.data[i]]);
      }
    }
    return chars.sort((a, b) => a[0] - b[0]).map((c) => c[1]).join("");
  };
  const plain = (text) =>
    text.replace(new RegExp(MARKS.source, "g"), "").replace(/[\u00a0\u202f]/g, " ");
  // Number runs ("2026", "10:00:00"): in a right-to-left isolate they come in reverse order.
  const groups = (text) => text.match(/\d+(?:[:.,]\d+)*/g) || [];
  let isolates = 0;
  for (const bdi of document.querySelectorAll("bdi[dir=ltr], bdi[dir=rtl]")) {
    if (!bdi.checkVisibility() || !bdi.textContent.trim()) continue;
    isolates++;
    const seen = plain(visual(bdi)), written = plain(bdi.textContent);
    const lines = new Set([...bdi.getClientRects()].map((r) => Math.round(r.bottom)));
    if (lines.size !== 1) problems.push(`split over lines: ${written}`);
    else if (bdi.dir === "ltr" ? seen !== written
             : groups(seen).reverse().join() !== groups(written).join())
      problems.push(`reads "${seen}" for "${written}"`);
  }
  return {problems, isolates};
}"""


LAYOUTS = ((1280, "light"), (390, "dark"))


def assert_reads_right(page: Any, name: str, *, numbers: bool = True) -> None:
    """Checks the page at 1280 px (light) and 390 px (dark): isolation, fit, axe; screenshots."""
    assert page.evaluate("document.documentElement.dir") == "rtl"
    for width, scheme in LAYOUTS:
        page.set_viewport_size({"width": width, "height": 844})
        page.emulate_media(color_scheme=scheme)
        result = page.evaluate(BIDI_PROBLEMS)
        assert result["problems"] == [], (name, width)
        if numbers:
            assert result["isolates"] > 0, f"{name}: no amount or date on the page"
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (name, width)
        screenshot(page, f"ar-{name}-{width}-{scheme}")
    assert_axe_clean(page)  # once, on the phone in dark: the other tests cover wide and light


def test_every_page_reads_right_in_arabic(live_server: LiveServer, new_page: Any) -> None:
    page = new_page(width=1280, height=844, scheme="light", locale="ar")
    base = live_server.url
    page.goto(f"{base}/login")
    assert_reads_right(page, "login", numbers=False)
    page.locator("#email").fill("admin@acme.test")
    page.locator("#password").fill("portal-demo-2026")
    page.locator("#password").press("Enter")
    page.wait_for_url(f"{base}/login/mfa")
    assert_reads_right(page, "mfa", numbers=False)
    page.locator("#code").fill(live_server.totp())
    page.locator("#code").press("Enter")
    page.wait_for_url(f"{base}/portal/dashboard")
    assert_reads_right(page, "dashboard")
    # The chart's amounts are SVG text: left to right there too.
    assert page.evaluate(
        "[...document.querySelectorAll('.aging-chart .bar-value')]"
        ".every((t) => getComputedStyle(t).direction === 'ltr')"
    )
    page.goto(f"{base}/portal/invoices")
    assert_reads_right(page, "invoices")
    page.goto(f"{base}/portal/invoices?status=overdue&sort=number&from=2020-01-01")
    assert_reads_right(page, "invoices-filtered")
    for number in ("INV-1005", "INV-1011"):  # partly paid (payments applied), disputed
        page.goto(base + invoice_path(page, live_server, number))
        assert_reads_right(page, f"invoice-{number}")
    open_one = invoice_path(page, live_server, "INV-1013")
    pid = open_one.rsplit("/", 1)[1]
    page.goto(f"{base}{open_one}/dispute")
    assert_reads_right(page, "dispute")
    page.goto(f"{base}/portal/payment?invoice={pid}")
    assert_reads_right(page, "payment-form")
    page.locator(f"#amount-{pid}").fill("99999")
    page.locator("button[value=review]").click()
    page.wait_for_selector(".pay-table .field-error")
    assert_reads_right(page, "payment-form-error")
    for width, _scheme in LAYOUTS:
        page.set_viewport_size({"width": width, "height": 844})
        assert_error_fits_its_cell(page, pid, width)
    page.locator(f"#amount-{pid}").fill("1")
    page.locator("button[value=review]").click()
    page.wait_for_selector("#confirm-title")
    assert_reads_right(page, "payment-confirm")
    page.goto(f"{base}/portal/payment-history")
    assert_reads_right(page, "payment-history")
    for status in ("succeeded", "processing"):
        row = page.locator(".invoice-table tbody tr", has=page.locator(f".badge-{status}"))
        href = row.first.locator("a").first.get_attribute("href")
        page.goto(f"{base}{href}")
        assert_reads_right(page, f"payment-{status}")
        page.goto(f"{base}/portal/payment-history")
    page.goto(f"{base}/portal/payment-methods")
    assert_reads_right(page, "payment-methods", numbers=False)
    page.goto(f"{base}/portal/security")
    assert_reads_right(page, "security")
    page.goto(f"{base}/portal/invoices/inv_doesnotexist")
    assert_reads_right(page, "error-404", numbers=False)


# The invoice list on a phone -----------------------------------------------------------------

PHONE_PAGE_MAX = 3600  # px for the 23 demo invoices at 360-390 px (8,700 before)


@pytest.mark.parametrize(
    ("width", "scheme", "locale"), [(390, "light", "en-US"), (360, "dark", "ar")]
)
def test_the_invoice_list_on_a_phone(
    live_server: LiveServer, browser: Any, width: int, scheme: str, locale: str
) -> None:
    context = browser.new_context(
        viewport={"width": width, "height": 780},
        color_scheme=scheme,
        locale=locale,
        has_touch=True,
    )
    page = context.new_page()
    sign_in_by_keyboard(page, live_server)
    tag = f"{width}-{scheme}-{locale[:2]}"
    page.goto(f"{live_server.url}/portal/invoices")
    cards = page.locator(".invoice-table tbody tr")
    assert cards.count() == 23
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height <= PHONE_PAGE_MAX, f"the list is {height} px tall"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    # Compact cards: number, status, due date and balance; the whole card opens the invoice.
    for card in cards.all():
        size = card.bounding_box()
        assert size and size["height"] <= 110, size
    first = cards.first
    for part in (".row-link", ".badge", ".cell-due", ".cell-balance", ".select-target"):
        expect(first.locator(part)).to_be_visible()
    for part in (".cell-issued", ".cell-total", ".cell-actions"):
        expect(first.locator(part)).to_be_hidden()
    target = first.locator(".select-target").bounding_box()
    assert target and target["width"] >= 44 and target["height"] >= 44
    # The filters fold behind a summary of what is active.
    panel = page.locator("details.filter-panel")
    assert panel.get_attribute("open") is None
    expect(page.locator("#status")).to_be_hidden()
    summary = page.locator(".filter-summary")
    assert (summary.bounding_box() or {}).get("height", 0) >= 44
    summary.click()
    expect(page.locator("#status")).to_be_visible()
    summary.click()
    # The selection bar sits at the bottom of the screen while the list scrolls.
    bar = page.locator(".selection-bar")
    page.mouse.wheel(0, 900)
    page.wait_for_timeout(100)
    assert_bar_at_bottom(page, bar, 780)
    count = page.locator("[data-selection-count]")
    assert count.get_attribute("role") == "status"
    expect(count).to_have_text(selected(0))
    for control in bar.locator("button").all():
        size = control.bounding_box()
        assert size and size["height"] >= 44 and size["width"] >= 44
    assert_axe_clean(page)
    screenshot(page, f"invoices-phone-{tag}")
    on_screen(page, f"invoices-phone-bar-{tag}")
    # Touch: a box ticks without opening the invoice; the card opens it.
    cards.nth(1).locator(".select-target").tap()
    expect(count).to_have_text(selected(1))
    assert page.url.endswith("/portal/invoices")
    # Keyboard: Select all, then Clear selection, from the bar.
    select_all = bar.locator("[data-select-all]")
    select_all.focus()
    page.keyboard.press("Enter")
    # all 23 but the 2 disputed ones (data-select-all-skip): not to be paid while disputed
    expect(count).to_have_text(selected(21))
    assert page.locator("input.row-select:checked").count() == 21
    assert page.locator("input.row-select[data-select-all-skip]:checked").count() == 0
    expect(select_all).to_have_text(select_all.get_attribute("data-clear-label") or "?")
    page.keyboard.press("Space")
    expect(count).to_have_text(selected(0))
    expect(select_all).to_have_text(select_all.get_attribute("data-select-label") or "?")
    assert page.locator("input.row-select:checked").count() == 0
    cards.nth(2).locator(".row-select").focus()
    page.keyboard.press("Space")
    expect(count).to_have_text(selected(1))
    on_screen(page, f"invoices-phone-selected-{tag}")
    number = cards.nth(2).locator(".row-link").inner_text()
    due = cards.nth(2).locator(".cell-due").bounding_box()
    assert due
    page.mouse.click(due["x"] + due["width"] / 2, due["y"] + due["height"] / 2)
    page.wait_for_url(re.compile(r".*/portal/invoices/inv_[\w-]+$"))
    assert number in page.locator("h1").inner_text()
    context.close()


def selected(number: int) -> re.Pattern[str]:
    """The live count in any language: the number, standing alone."""
    return re.compile(rf"(^|\D){number}(\D|$)")


def on_screen(page: Any, name: str) -> None:
    """What the phone's screen shows (a full-page capture cannot show a sticky bar)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def assert_bar_at_bottom(page: Any, bar: Any, viewport_height: int) -> None:
    placed = bar.bounding_box()
    assert placed and abs(placed["y"] + placed["height"] - viewport_height) <= 1, placed
    assert page.evaluate("window.scrollY") > 0


def test_the_selection_bar_without_javascript(browser: Any, live_server: LiveServer) -> None:
    context, page = sign_in_without_javascript(browser, live_server)
    page.set_viewport_size({"width": 390, "height": 780})
    page.goto(f"{live_server.url}/portal/invoices?q=INV-1013")
    expect(page.locator(".selection-bar")).to_be_visible()
    expect(page.locator("[data-selection-count]")).to_be_hidden()
    expect(page.locator("[data-select-all]")).to_be_hidden()
    page.locator(".select-target").first.click()
    page.get_by_role("button", name="Pay selected").click()
    expect(page.locator("h1")).to_have_text("Make Payment")
    assert re.search(r"/portal/payment\?invoice=inv_[\w-]+$", page.url)
    context.close()


# Printing ------------------------------------------------------------------------------------


def printed(page: Any) -> tuple[int, str]:
    reader = pypdf.PdfReader(io.BytesIO(page.pdf(format="A4")))
    return len(reader.pages), "\n".join(p.extract_text() for p in reader.pages)


def test_an_invoice_and_a_receipt_print_on_one_page(live_server: LiveServer, new_page: Any) -> None:
    page = new_page(width=1280, height=800, scheme="dark")  # dark screens still print black
    sign_in_by_keyboard(page, live_server)
    page.goto(live_server.url + invoice_path(page, live_server, "INV-1005"))
    total = page.locator(".totals .total dd").first.inner_text()
    pages, text = printed(page)
    assert pages == 1
    assert "INV-1005" in text and total in text
    for chrome in ("Sign out", "Change language", "Payment History", "Download PDF", "Skip"):
        assert chrome not in text
    page.emulate_media(media="print")  # what the PDF shows, as a picture to look at
    assert page.evaluate("getComputedStyle(document.body).color") == "rgb(0, 0, 0)"
    screenshot(page, "invoice-print")
    page.emulate_media(media="null")
    page.goto(f"{live_server.url}/portal/payment-history")
    row = page.locator(".invoice-table tbody tr", has=page.locator(".badge-succeeded")).first
    receipt = row.locator("a").first
    number = receipt.inner_text().split()[-1]
    receipt.click()
    page.wait_for_url(re.compile(r".*/portal/payments/\w+"))
    pages, text = printed(page)
    assert pages == 1
    assert number in text
    for chrome in ("Sign out", "Change language", "Download receipt", "Back to invoices"):
        assert chrome not in text
