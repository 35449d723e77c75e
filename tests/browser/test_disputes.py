"""A dispute's conversation in the browser: a message with an attachment by keyboard, the
billing team's reply and outcome (the service, as the CLI calls it), the customer side's
notification; axe in English and Arabic, and a phone's width. Globex's disputed RE-2026-006
is used, which no other browser test looks at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal import clock
from portal import disputes as application
from portal.models import Dispute, Invoice, Notification, NotificationTopic
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_payments import tab_until
from tests.browser.test_sign_in import assert_axe_clean, sign_in_by_keyboard
from tests.browser.test_statements import database, no_sideways_scroll, tab_to_id

pytestmark = pytest.mark.browser
NUMBER = "RE-2026-006"
EMAIL = "admin@globex.test"
PNG = (  # a whole 1x1 PNG: signature, IHDR, IDAT, IEND
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU"
    b"\x00\x00\x00\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82"
)


def _dispute_id(live: LiveServer, number: str = NUMBER) -> str:
    with database(live) as session:
        return session.scalars(
            select(Dispute.public_id)
            .join(Invoice, Invoice.id == Dispute.invoice_id)
            .where(Invoice.number == number)
        ).one()


def test_a_message_with_an_attachment_then_the_outcome(
    live_server: LiveServer, new_page: Any, tmp_path: Path
) -> None:
    public_id = _dispute_id(live_server)
    page = new_page()
    sign_in_by_keyboard(page, live_server, EMAIL)
    page.goto(f"{live_server.url}/portal/disputes/{public_id}")
    expect(page.locator("h1")).to_have_text(f"Dispute of invoice {NUMBER}")
    expect(page.locator(".badge-dispute-under_review")).to_have_text("Under review")
    assert_axe_clean(page)

    # Nothing written, nothing attached: the form says so beside the message.
    tab_until(page, "Send message")
    page.keyboard.press("Enter")
    expect(page.locator("#message-error")).to_have_text("Write a message or attach a file.")
    assert_axe_clean(page)

    photo = tmp_path / "meter.pdf"  # PNG bytes under a PDF's name: kept as what they are
    photo.write_bytes(PNG)
    tab_to_id(page, "message")
    page.keyboard.type("The meter photo shows one day on site.")
    tab_to_id(page, "attachments", limit=4)
    page.locator("#attachments").set_input_files(str(photo))  # the file chooser is the OS's
    tab_until(page, "Send message")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page.locator(".flashes")).to_contain_text("Message sent.")
    thread = page.locator(".dispute-thread")
    expect(thread).to_contain_text("The meter photo shows one day on site.")
    expect(thread.get_by_role("link", name="meter.png")).to_be_visible()
    assert_axe_clean(page)

    # The billing team answers and rejects, as `flask disputes reply|reject` does.
    app = live_server.app
    with database(live_server) as session:
        dispute = session.scalars(select(Dispute).where(Dispute.public_id == public_id)).one()
        runtime = app.extensions["portal.runtime"]
        application.staff_reply(
            runtime, session, dispute, body="We checked the timesheet.", uploads=[], now=clock.now()
        )
        application.reject(
            runtime, session, dispute, reason="Two days were booked.", now=clock.now()
        )
        session.commit()
    page.reload()
    expect(page.locator(".badge-dispute-rejected")).to_have_text("Rejected")
    expect(thread.locator(".dispute-entry-staff").last).to_contain_text("We checked the timesheet.")
    expect(page.locator(".dispute-facts")).to_contain_text("Two days were booked.")
    expect(page.get_by_role("button", name="Send message")).to_have_count(0)
    assert_axe_clean(page)
    screenshot(page, "dispute-rejected-1280-dark")
    with database(live_server) as session:
        told = session.scalars(
            select(Notification).where(
                Notification.topic == NotificationTopic.DISPUTE_UPDATED,
                Notification.link == f"/portal/disputes/{public_id}",
            )
        ).all()
    assert {n.params["event"] for n in told} == {"reply", "rejected"}


@pytest.mark.parametrize(("locale", "scheme"), [("ar", "dark"), ("en-US", "light")])
def test_the_page_on_a_phone(
    live_server: LiveServer, new_page: Any, locale: str, scheme: str
) -> None:
    """Acme East's open INV-2009 dispute, only looked at: its reply form and Withdraw."""
    public_id = _dispute_id(live_server, "INV-2009")
    page = new_page(width=360, height=800, scheme=scheme, locale=locale)
    sign_in_by_keyboard(page, live_server, "admin@acme.test")
    page.goto(f"{live_server.url}/portal/disputes/{public_id}")
    if locale == "ar":
        assert page.evaluate("document.documentElement.dir") == "rtl"
    expect(page.locator(".dispute-thread li").first).to_be_visible()
    expect(page.locator("#attachments")).to_be_visible()
    for target in ("#attachments", "form[enctype] button[type=submit]"):
        assert page.locator(target).bounding_box()["height"] >= 44
    no_sideways_scroll(page, 360)
    assert_axe_clean(page)
    screenshot(page, f"dispute-360-{scheme}-{locale[:2]}")
    page.goto(f"{live_server.url}/portal/disputes/{public_id}/withdraw")
    no_sideways_scroll(page, 360)
    assert_axe_clean(page)


def test_select_all_leaves_disputed_invoices_unticked(
    live_server: LiveServer, new_page: Any
) -> None:
    page = new_page()
    sign_in_by_keyboard(page, live_server, "admin@acme.test")
    page.goto(f"{live_server.url}/portal/invoices")
    held = page.locator("input.row-select[data-select-all-skip]")
    offered = page.locator("input.row-select:not([data-select-all-skip])")
    assert held.count() >= 1 and offered.count() >= 1
    toggle = page.locator("[data-select-all]")
    expect(toggle).to_have_text("Select all")
    toggle.focus()  # the bar sits after every row's links: straight to it, then the keyboard
    page.keyboard.press("Enter")
    for index in range(offered.count()):
        expect(offered.nth(index)).to_be_checked()
    for index in range(held.count()):
        expect(held.nth(index)).not_to_be_checked()
    expect(toggle).to_have_text("Clear selection")
    page.keyboard.press("Enter")  # and back: nothing ticked
    expect(page.locator("input.row-select:checked")).to_have_count(0)
