"""Statements as people ask for them: by keyboard alone, without JavaScript, on a phone, in
Arabic, with axe watching. The live server's background work is the ManualQueue: the tests run
it by hand (`run_due`) while the page polls itself."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import PortalUser, Statement, StatementState
from portal.services import downloads
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_payments import tab_until
from tests.browser.test_sign_in import (
    assert_axe_clean,
    sign_in_by_keyboard,
    sign_in_without_javascript,
)

pytestmark = pytest.mark.browser
POLL = 10_000  # ms: the list asks for itself every 2 s; the no-JS page refreshes every 3 s
REQUEST = "form[action$='/portal/statements'] button[type=submit]"


def tab_to_id(page: Any, element_id: str, limit: int = 60) -> None:
    """Press Tab until the element `element_id` has the focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == element_id:
            return
    raise AssertionError(f"never reached #{element_id} by Tab")


@contextmanager
def database(live: LiveServer) -> Iterator[Session]:
    """A cross-company session on the live server's database."""
    with (
        live.app.app_context(),
        live.app.extensions["portal.db"].sessionmaker() as session,
        tenancy.system(session),
    ):
        yield session


def statements(live: LiveServer, email: str) -> list[Statement]:
    """The statements `email` asked for, newest first, as the database has them now."""
    with database(live) as session:
        user = session.scalars(select(PortalUser).where(PortalUser.email == email)).one()
        return list(
            session.scalars(
                select(Statement)
                .where(Statement.requested_by_user_id == user.id)
                .order_by(Statement.id.desc())
            )
        )


def change(live: LiveServer, public_id: str, **values: Any) -> None:
    """The statement's row changed as its job or the sweep would change it."""
    with database(live) as session:
        session.execute(update(Statement).where(Statement.public_id == public_id).values(**values))
        session.commit()


def run_work(live: LiveServer) -> None:
    live.app.extensions["portal.jobs"].run_due()


def no_sideways_scroll(page: Any, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def assert_the_file_is(download: Any, statement: Statement) -> None:
    data = Path(download.path()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == statement.sha256
    assert download.suggested_filename == statement.filename


def test_a_statement_by_keyboard_alone(live_server: LiveServer, new_page: Any) -> None:
    email = "admin@acme.test"
    page = new_page()
    sign_in_by_keyboard(page, live_server, email)
    page.goto(f"{live_server.url}/portal/statements")
    expect(page.locator("h1")).to_have_text("Statements")
    assert_axe_clean(page)
    # No account chosen: the form says so beside the accounts, and keeps what was typed.
    tab_to_id(page, "accounts-0")
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    page.keyboard.press("Space")
    tab_until(page, "Request statement")
    page.keyboard.press("Enter")
    expect(page.locator("#accounts-error")).to_have_text("Choose at least one billing account.")
    assert_axe_clean(page)
    screenshot(page, "statement-errors-1280-dark")

    # The dates typed as a person types them into a date field (en-US: month, day, year).
    start = date.today() - timedelta(days=60)
    tab_to_id(page, "start_date")
    page.keyboard.type(start.strftime("%m%d%Y"))
    tab_to_id(page, "end_date", limit=4)  # past the field's own parts
    page.keyboard.type(date.today().strftime("%m%d%Y"))
    assert page.locator("#start_date").input_value() == start.isoformat()
    assert page.locator("#end_date").input_value() == date.today().isoformat()
    for box in ("accounts-0", "accounts-1"):  # both accounts again
        tab_to_id(page, box)
        page.keyboard.press("Space")
        expect(page.locator(f"#{box}")).to_be_checked()
    tab_to_id(page, "format")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#format")).to_have_value("csv")
    tab_until(page, "Request statement")
    with page.expect_navigation(url=f"{live_server.url}/portal/statements"):
        page.keyboard.press("Enter")
    expect(page.locator(".flashes")).to_contain_text("Statement requested.")
    first = statements(live_server, email)[0]
    row = page.locator(f"#statement-{first.public_id}")
    expect(row.locator(".statement-state")).to_contain_text("Queued")
    assert_axe_clean(page)
    screenshot(page, "statement-queued-1280-dark")

    run_work(live_server)  # the statement, then its mail
    expect(row.locator(".statement-state")).to_contain_text("Ready", timeout=POLL)
    expect(page.locator("#statement-news")).to_contain_text("is ready to download")
    assert_axe_clean(page)

    # A second one while the first is ready: the list polls, and a keyboard user's place on
    # the first one's Download link survives each refresh.
    tab_to_id(page, "format")
    tab_until(page, "Request statement")
    with page.expect_navigation(url=f"{live_server.url}/portal/statements"):
        page.keyboard.press("Enter")
    second = statements(live_server, email)[0]
    assert second.public_id != first.public_id
    expect(page.locator(f"#statement-{second.public_id}")).to_contain_text("Queued")
    download_first = f"download-{first.public_id}"
    tab_to_id(page, download_first)
    with page.expect_response(lambda r: "watch=" in r.url, timeout=POLL):
        pass  # one refresh of the list (the one that brings the news is another)
    assert page.evaluate("document.activeElement.id") == download_first

    run_work(live_server)
    news = page.locator("#statement-news")
    expect(news).to_contain_text("is ready to download", timeout=POLL)
    assert page.evaluate("document.activeElement.id") == download_first
    second = statements(live_server, email)[0]
    assert second.state is StatementState.READY and second.sha256
    page.keyboard.press("Shift+Tab")  # the rows are newest first: back to the second's link
    assert page.evaluate("document.activeElement.id") == f"download-{second.public_id}"
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    assert_the_file_is(download.value, second)
    wrap = (
        "(w => w.scrollWidth <= w.clientWidth)"
        "(document.querySelector('#statement-list > .table-wrap'))"
    )
    assert page.evaluate(wrap), "the list fits its column: nothing scrolls sideways"
    assert_axe_clean(page)
    screenshot(page, "statement-ready-1280-dark")


def test_a_statement_without_javascript(browser: Any, live_server: LiveServer) -> None:
    context, page = sign_in_without_javascript(browser, live_server)
    page.goto(f"{live_server.url}/portal/statements")
    page.get_by_label("Start Date").fill((date.today() - timedelta(days=10)).isoformat())
    page.get_by_label("Format").select_option("csv")
    with page.expect_navigation(url=f"{live_server.url}/portal/statements"):
        page.get_by_role("button", name="Request statement").click()
    mine = statements(live_server, "admin@acme.test")[0]
    row = page.locator(f"#statement-{mine.public_id}")
    expect(row).to_contain_text("Queued")
    run_work(live_server)
    # Nothing is clicked: the page refreshes itself (<noscript> meta refresh) until it is ready.
    expect(row).to_contain_text("Ready", timeout=POLL)
    assert page.locator("meta[http-equiv=refresh]").count() == 0  # nothing left to wait for
    with page.expect_download() as download:
        row.get_by_role("link", name=re.compile("^Download")).click()
    assert_the_file_is(download.value, statements(live_server, "admin@acme.test")[0])
    context.close()


@pytest.mark.parametrize(
    ("email", "width", "scheme", "locale"),
    [
        ("admin@initech.test", 360, "light", "en-US"),
        ("admin@globex.test", 360, "dark", "ar"),
    ],
)
def test_every_state_of_the_page_is_axe_clean_and_fits_a_phone(
    live_server: LiveServer, new_page: Any, email: str, width: int, scheme: str, locale: str
) -> None:
    page = new_page(width=width, height=800, scheme=scheme, locale=locale)
    tag = f"{width}-{scheme}-{locale[:2]}"
    sign_in_by_keyboard(page, live_server, email)
    url = f"{live_server.url}/portal/statements"
    page.goto(url)
    if locale == "ar":
        assert page.evaluate("document.documentElement.dir") == "rtl"
    assert statements(live_server, email) == []
    expect(page.locator("#statement-list .empty")).to_have_count(1)

    def looked_at(state: str) -> None:
        no_sideways_scroll(page, width)
        assert_axe_clean(page)
        screenshot(page, f"statement-{state}-{tag}")

    looked_at("empty")
    # inline errors: the end before the start
    page.locator("#start_date").fill(date.today().isoformat())
    page.locator("#end_date").fill((date.today() - timedelta(days=3)).isoformat())
    page.locator(REQUEST).click()
    expect(page.locator("#end_date-error")).to_be_visible()
    expect(page.locator("#end_date")).to_have_attribute("aria-invalid", "true")
    looked_at("errors")
    page.goto(url)
    page.locator("#format").select_option("csv")
    with page.expect_navigation(url=url):
        page.locator(REQUEST).click()
    first = statements(live_server, email)[0]
    expect(page.locator(f"#statement-{first.public_id} .badge")).to_be_visible()
    looked_at("queued")
    # Each state as the list shows it (how the list follows them is the keyboard test's).
    change(live_server, first.public_id, state=StatementState.RUNNING, progress=40)
    page.reload()
    expect(page.locator(f"#statement-{first.public_id} progress")).to_be_visible()
    looked_at("generating")
    run_work(live_server)
    page.reload()
    expect(page.locator(f"#download-{first.public_id}")).to_be_visible()
    looked_at("ready")
    # another that fails (its time ran out), beside the ready one
    with page.expect_navigation(url=url):
        page.locator(REQUEST).click()
    second = statements(live_server, email)[0]
    change(live_server, second.public_id, state=StatementState.FAILED, error_code="timed_out")
    page.reload()
    expect(page.locator(f"#retry-{second.public_id}")).to_be_visible()
    looked_at("failed")
    # the phone's cards: each cell on its own line, inside the card
    card = page.locator(f"#statement-{second.public_id}").bounding_box()
    button = page.locator(f"#retry-{second.public_id}").bounding_box()
    assert card["x"] >= 0 and card["x"] + card["width"] <= width
    assert button["x"] >= card["x"] and button["x"] + button["width"] <= card["x"] + card["width"]
    assert button["height"] >= 44  # a touch target
    refused_links_say_why(page, live_server, tag)


def refused_links_say_why(page: Any, live: LiveServer, tag: str) -> None:
    """An altered link, one made for someone else and one a day old: a page that says which,
    never the file."""
    app = live.app
    now = app.extensions["portal.clock"].now()
    keys = app.extensions["portal.runtime"].settings.keyring
    links = {
        "invalid": ("not-a-link", 404),
        "foreign": (
            downloads.sign(downloads.FileKind.STATEMENT, "stm_x", "usr_x", keys=keys, now=now),
            404,
        ),
        "expired": (
            downloads.sign(
                downloads.FileKind.STATEMENT,
                "stm_x",
                "usr_x",
                keys=keys,
                now=now - downloads.LIFETIME - timedelta(minutes=1),
            ),
            410,
        ),
    }
    for state, (token, status) in links.items():
        answer = page.goto(f"{live.url}/portal/download/{token}")
        assert answer is not None and answer.status == status, state
        expect(page.locator("h1")).to_be_visible()
        no_sideways_scroll(page, page.viewport_size["width"])
        assert_axe_clean(page)
        screenshot(page, f"download-refused-{state}-{tag}")
