"""Notifications as people use them: a preference changed by keyboard, the centre with its
header count dropping as notifications are marked read (out of band), without JavaScript too,
and the one-click unsubscribe page; in English at 1280 px and Arabic at 360 px, axe watching."""

from __future__ import annotations

import re
from typing import Any
from uuid import uuid4

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import NotificationTopic, PortalUser
from portal.services import notifications
from portal.services.crypto import Keyring
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_layout import assert_reads_right
from tests.browser.test_sign_in import (
    assert_axe_clean,
    sign_in_by_keyboard,
    sign_in_without_javascript,
)
from tests.browser.test_statements import database, no_sideways_scroll, tab_to_id
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.browser
SETTLED = "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"
PARAMS = {"invoice": "INV-1013", "amount": 12345, "currency": "USD", "due_date": "2026-12-04"}


def announce(live: LiveServer, email: str, count: int) -> None:
    """`count` new unread notifications for `email`, as the reminder job would record them."""
    with database(live) as session:
        user = session.scalars(select(PortalUser).where(PortalUser.email == email)).one()
        for _ in range(count):
            notifications.record(
                session,
                user,
                NotificationTopic.PAYMENT_DUE,
                key=f"browser:{uuid4()}",
                params=PARAMS,
                link="/portal/invoices",
                in_portal=True,
                by_email=False,
                now=live.app.extensions["portal.clock"].now(),
            )
        session.commit()


def unread(live: LiveServer, email: str) -> int:
    with database(live) as session:
        user = session.scalars(select(PortalUser).where(PortalUser.email == email)).one()
        return notifications.unread_count(session, user)


def badge_count(page: Any) -> str:
    """What the header's badge shows: its number, or "" when nothing is unread."""
    count = page.locator("#notification-badge .notification-count")
    return str(count.inner_text()) if count.count() else ""


def press_on(page: Any, selector: str) -> None:
    """Focus an element and press Enter, as a keyboard user does once there."""
    page.locator(selector).focus()
    page.keyboard.press("Enter")


@pytest.mark.parametrize(
    ("email", "width", "scheme", "locale"),
    [
        ("admin@acme.test", 1280, "dark", "en-US"),
        ("admin@globex.test", 360, "light", "ar"),
    ],
)
def test_preferences_and_the_centre_by_keyboard(
    live_server: LiveServer, new_page: Any, email: str, width: int, scheme: str, locale: str
) -> None:
    announce(live_server, email, 2)
    page = new_page(width=width, height=800, scheme=scheme, locale=locale)
    tag = f"{width}-{scheme}-{locale[:2]}"
    base = live_server.url
    sign_in_by_keyboard(page, live_server, email)

    # A preference, changed by keyboard: Space ticks the box, Enter on Save saves.
    page.goto(f"{base}/portal/notifications")
    if locale == "ar":
        assert page.evaluate("document.documentElement.dir") == "rtl"
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"notification-preferences-{tag}")
    box = page.locator("#email-monthly_statement")
    was = box.is_checked()
    tab_to_id(page, "email-monthly_statement")
    page.keyboard.press("Space")
    expect(box).to_be_checked(checked=not was)
    tab_to_id(page, "remind_days")
    with page.expect_navigation(url=f"{base}/portal/notifications"):
        press_on(page, "#notification-preferences button[type=submit]")
    expect(page.locator(".flashes")).to_be_visible()
    expect(page.locator("#email-monthly_statement")).to_be_checked(checked=not was)
    assert_axe_clean(page)
    # Back as it was (other tests read this user's mail).
    page.locator("#email-monthly_statement").focus()
    page.keyboard.press("Space")
    with page.expect_navigation(url=f"{base}/portal/notifications"):
        press_on(page, "#notification-preferences button[type=submit]")
    expect(page.locator("#email-monthly_statement")).to_be_checked(checked=was)

    # The header's badge leads to the centre and says how many are unread.
    before = unread(live_server, email)
    assert before >= 2
    assert badge_count(page) == str(before)
    if locale == "en-US":
        expect(page.locator("#notification-badge")).to_have_accessible_name(
            f"Notifications, {before} unread"
        )
    with page.expect_navigation(url=f"{base}/portal/notifications/inbox"):
        press_on(page, "#notification-badge")
    expect(page.locator(".notification-unread").first).to_be_visible()
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"notification-centre-{tag}")
    if locale == "ar":
        assert_reads_right(page, "notification-centre")
        page.set_viewport_size({"width": width, "height": 800})

    # Mark one read: htmx swaps the list; the count drops out of band; focus stays in place.
    first = page.locator(".notification-unread button[id^=mark-]").first
    mark_id = first.get_attribute("id")
    tab_to_id(page, str(mark_id))
    with page.expect_response(lambda r: r.url.endswith("/read") and r.status == 200):
        page.keyboard.press("Enter")
    page.wait_for_function(SETTLED)
    expect(page.locator("#notification-badge .notification-count")).to_have_text(str(before - 1))
    assert page.url == f"{base}/portal/notifications/inbox"  # no page load
    assert page.evaluate("document.activeElement.id") == mark_id
    expect(page.locator(f"p#{mark_id}")).to_be_visible()
    expect(page.locator("#notification-news")).not_to_be_empty()
    assert unread(live_server, email) == before - 1
    assert_axe_clean(page)

    # Mark all read: no count left, and the button says so in its place.
    tab_to_id(page, "mark-all")
    with page.expect_response(lambda r: r.url.endswith("/read-all")):
        page.keyboard.press("Enter")
    page.wait_for_function(SETTLED)
    expect(page.locator("#notification-badge .notification-count")).to_have_count(0)
    assert page.evaluate("document.activeElement.id") == "mark-all"
    expect(page.locator(".notification-unread")).to_have_count(0)
    if locale == "en-US":
        expect(page.locator("#notification-badge")).to_have_accessible_name(
            "Notifications, 0 unread"
        )
    assert unread(live_server, email) == 0
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"notification-centre-read-{tag}")


def test_the_centre_without_javascript(browser: Any, live_server: LiveServer) -> None:
    announce(live_server, "admin@acme.test", 2)
    before = unread(live_server, "admin@acme.test")
    context, page = sign_in_without_javascript(browser, live_server)
    page.goto(f"{live_server.url}/portal/notifications/inbox")
    assert badge_count(page) == str(before)
    page.locator(".notification-unread").first.get_by_role("button").click()
    expect(page.locator(".flashes")).to_contain_text("Notification marked as read.")
    assert badge_count(page) == str(before - 1)
    page.get_by_role("button", name="Mark all as read").click()
    expect(page.locator(".flashes")).to_contain_text("All notifications marked as read.")
    assert badge_count(page) == ""
    page.get_by_role("link", name="Notification preferences").first.click()
    page.get_by_label("Remind me before the due date").select_option("7")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.locator(".flashes")).to_contain_text(
        "Notification preferences updated successfully"
    )
    expect(page.get_by_label("Remind me before the due date")).to_have_value("7")
    page.get_by_label("Remind me before the due date").select_option("3")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.get_by_label("Remind me before the due date")).to_have_value("3")
    context.close()


@pytest.mark.parametrize(("width", "locale"), [(1280, "en-US"), (360, "ar")])
def test_unsubscribing_from_a_mail_link(
    live_server: LiveServer, new_page: Any, width: int, locale: str
) -> None:
    """Nobody signed in: the page says what stops, one button does it (by keyboard), a second
    visit says the same; an altered link says so."""
    with database(live_server) as session:
        user = session.scalars(select(PortalUser).where(PortalUser.email == "ap@acme.test")).one()
        token = notifications.unsubscribe_token(
            user,
            NotificationTopic.INVOICE_ISSUED,
            keys=Keyring(TEST_SECRET),
            now=live_server.app.extensions["portal.clock"].now(),
        )
    page = new_page(width=width, height=800, locale=locale)
    tag = f"{width}-{locale[:2]}"
    url = f"{live_server.url}/unsubscribe/{token}"
    page.goto(url)
    if locale == "en-US":
        expect(page.locator("main")).to_contain_text(
            re.compile(r"Stop e-mails about New invoices to a•••@acme\.test\?")
        )
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"unsubscribe-{tag}")
    with page.expect_navigation(url=url):
        press_on(page, "main button[type=submit]")
    expect(page.locator("main .alert")).to_be_visible()
    if locale == "en-US":
        expect(page.locator("main .alert")).to_contain_text(
            "We won't e-mail a•••@acme.test about New invoices any more."
        )
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"unsubscribed-{tag}")
    with database(live_server) as session:
        user = session.scalars(select(PortalUser).where(PortalUser.email == "ap@acme.test")).one()
        assert not notifications.channels(session, user, NotificationTopic.INVOICE_ISSUED)["email"]
        # Back on: other tests may announce invoices to this user.
        notifications.set_preferences(
            session,
            user,
            {(NotificationTopic.INVOICE_ISSUED, notifications.NotificationChannel.EMAIL): True},
        )
        session.commit()
    page.goto(f"{live_server.url}/unsubscribe/{token[:-4]}AAAA")
    expect(page.locator("main .alert-error")).to_be_visible()
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"unsubscribe-refused-{tag}")
