"""Company users as an administrator and an invitee meet them: by keyboard alone, the invitation
read from a real SMTP server, a password, two-step enrolment with the secret the page shows, and
the dashboard signed in as the new user; axe in English and Arabic; the list at 360 px."""

from __future__ import annotations

import re
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import PortalUser, UserStatus
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_payments import tab_until
from tests.browser.test_sign_in import assert_axe_clean, sign_in_by_keyboard
from tests.browser.test_statements import (
    database,
    no_sideways_scroll,
    run_work,
    tab_to_id,
)
from tests.conftest import smtp_server

pytestmark = pytest.mark.browser
INVITEE = "casey.keys@acme.test"


def _invitation_path(message: Any) -> str:
    (plain,) = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    body = plain.get_payload(decode=True).decode()
    found = re.search(r"https?://[^/\s]+(/invitations/\S+)", body)
    assert found, body
    return found.group(1)


def test_an_invitation_by_keyboard_alone(
    live_server: LiveServer, new_page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = live_server.url
    admin = new_page()
    sign_in_by_keyboard(admin, live_server, "admin@acme.test")
    admin.goto(f"{base}/portal/users")
    expect(admin.locator("h1")).to_have_text("Users")
    assert_axe_clean(admin)

    with smtp_server(live_server.app, monkeypatch) as inbox:
        tab_to_id(admin, "email")
        admin.keyboard.type(INVITEE)
        tab_to_id(admin, "role", limit=3)
        expect(admin.locator("#role")).to_have_value("customer")
        tab_to_id(admin, "accounts-0", limit=3)
        admin.keyboard.press("Space")
        expect(admin.locator("#accounts-0")).to_be_checked()
        tab_until(admin, "Invite user")
        with admin.expect_navigation(url=re.compile(r".*/portal/users/usr_[\w-]+$")):
            admin.keyboard.press("Enter")
        expect(admin.locator(".flashes")).to_contain_text(f"Invitation sent to {INVITEE}.")
        expect(admin.locator("h1")).to_have_text(INVITEE)
        assert_axe_clean(admin)
        run_work(live_server)
        (message,) = [m for m in inbox.messages if m["To"] == INVITEE]  # alerts go elsewhere
    assert message["To"] == INVITEE
    path = _invitation_path(message)

    invitee = new_page()
    invitee.goto(f"{base}{path}")
    expect(invitee.locator("h1")).to_have_text("Accept your invitation")
    assert_axe_clean(invitee)
    tab_to_id(invitee, "name")
    invitee.keyboard.type("Casey Keys")
    invitee.keyboard.press("Tab")
    invitee.keyboard.type("amber kettle meadow 77")
    invitee.keyboard.press("Tab")
    invitee.keyboard.type("amber kettle meadow 77")
    with invitee.expect_navigation(url=f"{base}/mfa/setup"):
        invitee.keyboard.press("Enter")
    secret = invitee.locator("#mfa-secret").inner_text().replace(" ", "")
    clock = live_server.app.extensions["portal.clock"]
    tab_to_id(invitee, "code")
    invitee.keyboard.type(pyotp.TOTP(secret).at(clock.now()))
    with invitee.expect_navigation(url=f"{base}/mfa/setup"):  # the recovery codes, shown once
        invitee.keyboard.press("Enter")
    expect(invitee.locator("h1")).to_contain_text("recovery codes")
    tab_until(invitee, "Continue to the portal")
    with invitee.expect_navigation(url=f"{base}/portal/dashboard"):
        invitee.keyboard.press("Enter")
    expect(invitee.locator("body")).to_contain_text("Casey Keys")
    assert_axe_clean(invitee)
    with database(live_server) as session:
        user = session.scalars(select(PortalUser).where(PortalUser.email == INVITEE)).one()
        assert user.status is UserStatus.ACTIVE and user.mfa_enrolled

    # The used link says so.
    invitee.goto(f"{base}{path}")
    expect(invitee.get_by_role("alert")).to_contain_text("accepted already")
    assert_axe_clean(invitee)

    admin.goto(f"{base}/portal/users")
    row = admin.locator("tr", has_text=INVITEE)
    expect(row).to_contain_text("Active")
    expect(row).to_contain_text("Set up")


@pytest.mark.parametrize(("locale", "scheme"), [("ar", "dark"), ("en-US", "light")])
def test_the_list_on_a_phone(
    live_server: LiveServer, new_page: Any, locale: str, scheme: str
) -> None:
    page = new_page(width=360, height=780, scheme=scheme, locale=locale)
    sign_in_by_keyboard(page, live_server, "admin@acme.test")
    page.goto(f"{live_server.url}/portal/users")
    expect(page.locator("table.user-table")).to_be_visible()
    assert page.locator("html").get_attribute("lang") == locale.split("-")[0]
    no_sideways_scroll(page, 360)
    assert_axe_clean(page)
    screenshot(page, f"users-list-360-{locale}-{scheme}")
    # A user's page and a confirm step, too.
    page.locator("tr", has_text="ap@acme.test").get_by_role("link").first.click()
    page.wait_for_url(re.compile(r".*/portal/users/usr_[\w-]+$"))
    no_sideways_scroll(page, 360)
    assert_axe_clean(page)
    page.goto(page.url + "/deactivate")
    no_sideways_scroll(page, 360)
    assert_axe_clean(page)
    screenshot(page, f"users-confirm-360-{locale}-{scheme}")
