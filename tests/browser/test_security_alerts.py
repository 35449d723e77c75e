""" "This wasn't me" as someone who fears their account is taken uses it: from the mail's link,
nobody signed in, by keyboard alone; then an expired link. English at 1280 px and Arabic at
360 px, axe watching."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import Company, PortalUser, SecurityAlert, UserSession
from portal.services import audit
from portal.services import security_alerts as domain
from portal.services.crypto import Keyring
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_sign_in import assert_axe_clean
from tests.browser.test_statements import database, no_sideways_scroll, tab_to_id
from tests.conftest import TEST_SECRET
from tests.factories import make_user

pytestmark = pytest.mark.browser


def _alerted(live: LiveServer) -> tuple[str, str, int]:
    """A fresh user of Acme with an alert: (its link's path, an expired one's, the user's id)."""
    now = live.app.extensions["portal.clock"].now()
    keys = Keyring(TEST_SECRET)
    with database(live) as session:
        company = session.scalars(select(Company).where(Company.name.like("Acme%"))).first()
        assert company is not None
        user = make_user(session, company, f"feared-{uuid4().hex[:8]}@acme.test")
        request = audit.RequestInfo("203.0.113.9", "Firefox/128.0 (Windows)")
        alert = domain.record(session, user, domain.Kind.NEW_SIGN_IN, request=request, now=now)
        assert alert is not None
        session.add(
            UserSession(
                company_id=company.id,
                user_id=user.id,
                token_hash=uuid4().hex * 2,
                expires_at=now + timedelta(hours=8),
                last_seen_at=now,
                mfa_verified=True,
            )
        )
        fresh = domain.not_me_token(user, alert, keys=keys, now=now)
        old = domain.not_me_token(user, alert, keys=keys, now=now - timedelta(days=8))
        session.commit()
        return f"/security/not-me/{fresh}", f"/security/not-me/{old}", user.id


@pytest.mark.parametrize(("width", "locale"), [(1280, "en-US"), (360, "ar")])
def test_securing_an_account_by_keyboard(
    live_server: LiveServer, new_page: Any, width: int, locale: str
) -> None:
    link, expired, user_id = _alerted(live_server)
    page = new_page(width=width, height=800, locale=locale)
    tag = f"{width}-{locale[:2]}"
    url = f"{live_server.url}{link}"
    page.goto(url)
    if locale == "en-US":
        expect(page.locator("h1")).to_have_text("Secure your account")
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"not-me-{tag}")
    tab_to_id(page, "secure-account")
    with page.expect_navigation(url=url):
        page.keyboard.press("Enter")
    expect(page.locator("main .alert")).to_be_visible()
    if locale == "en-US":
        expect(page.locator("h1")).to_have_text("Your account is secured")
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"not-me-done-{tag}")
    with database(live_server) as session:
        live = session.scalars(
            select(UserSession).where(
                UserSession.user_id == user_id, UserSession.revoked_at.is_(None)
            )
        ).all()
        user = session.get(PortalUser, user_id)
        secured = session.scalars(
            select(SecurityAlert).where(SecurityAlert.user_id == user_id)
        ).one()
        assert live == [] and user is not None and user.password_hash is None
        assert secured.secured_at is not None
    answer = page.goto(f"{live_server.url}{expired}")
    assert answer is not None and answer.status == 410
    expect(page.locator("main .alert-error")).to_be_visible()
    no_sideways_scroll(page, width)
    assert_axe_clean(page)
    screenshot(page, f"not-me-expired-{tag}")
