"""Notifications on the web: the preferences page, the centre and its header badge (kept
current out of band), and the one-click unsubscribe page a mail links to."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import (
    AuditEvent,
    Notification,
    NotificationChannel,
    NotificationTopic,
    PortalUser,
)
from portal.notifications import notify
from portal.services import notifications
from portal.services.crypto import Keyring
from tests.conftest import (
    TEST_SECRET,
    Auth,
    QueryCounter,
    csrf_token,
    readable,
    user_by_email,
)
from tests.web.fuzz_helpers import FUZZ, TEXT

pytestmark = pytest.mark.usefixtures("connection")
DUE = NotificationTopic.PAYMENT_DUE
EMAIL, PORTAL = NotificationChannel.EMAIL, NotificationChannel.PORTAL
PARAMS = {"invoice": "INV-7001", "amount": 12345, "currency": "USD", "due_date": "2026-12-04"}
FRAGMENT = {"HX-Request": "true", "HX-Target": "notification-list"}


def _user(db: Session, email: str = "admin@acme.test") -> PortalUser:
    db.expire_all()
    return user_by_email(db, email)


def _events(db: Session, name: str) -> list[AuditEvent]:
    with tenancy.system(db):
        return list(
            db.scalars(select(AuditEvent).where(AuditEvent.name == name).order_by(AuditEvent.id))
        )


def _notice(app: Flask, db: Session, email: str, invoice: str) -> str:
    """A notification of a due invoice for `email`, shown in the portal, committed: its id."""
    user = _user(db, email)
    with tenancy.system(db):
        row = notifications.record(
            db,
            user,
            DUE,
            key=f"due:{invoice}",
            params={**PARAMS, "invoice": invoice},
            link="/portal/invoices",
            in_portal=True,
            by_email=False,
            now=app.extensions["portal.clock"].now(),
        )
    assert row is not None
    public_id = row.public_id
    db.commit()
    return public_id


def _read_at(db: Session, public_id: str) -> object:
    db.expire_all()
    with tenancy.system(db):
        return db.scalar(select(Notification.read_at).where(Notification.public_id == public_id))


def _form(client: FlaskClient, **changes: bool | str) -> dict[str, str]:
    """The preferences form as the page shows it (ticked boxes sent as "y"), with `changes`."""
    page = client.get("/portal/notifications").get_data(as_text=True)
    data = {"csrf_token": re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)[1]}  # type: ignore[index]
    for name in re.findall(r'<input[^>]*checked[^>]*name="([^"]+)"', page):
        data[name] = "y"
    data["remind_days"] = (
        re.search(  # type: ignore[index]
            r'<option selected value="(\d+)"|<option value="(\d+)" selected', page
        ).group(1)
        or "3"
    )
    for name, value in changes.items():
        name = name.replace("__", "-")
        if value is False:
            data.pop(name, None)
        else:
            data[name] = "y" if value is True else str(value)
    return data


def _badge(html: str) -> str:
    found = re.search(r'<a id="notification-badge".*?</a>', html, re.DOTALL)
    assert found, "the header's notification link"
    return found.group(0)


# preferences -------------------------------------------------------------------------------


def test_the_page_shows_every_topic_on_both_channels_with_names(
    client: FlaskClient, signed_in: Auth
) -> None:
    page = client.get("/portal/notifications")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<h1>Notification preferences</h1>" in html
    boxes = re.findall(r'<input[^>]*type="checkbox"[^>]*>', html)
    # Security alerts are always on: "Always on" in words, no checkbox to turn them off.
    switchable = [t for t in NotificationTopic if t not in notifications.ALWAYS_ON]
    assert len(boxes) == len(switchable) * len(NotificationChannel) == 20
    assert "Always on" in html and 'name="email-security_alert"' not in html
    for topic in switchable:
        for channel in NotificationChannel:
            box = next(b for b in boxes if f'name="{channel.value}-{topic.value}"' in b)
            assert f'aria-labelledby="topic-{topic.value} channel-{channel.value}"' in box
    assert '<th scope="row" id="topic-payment_due">Payment due reminders</th>' in html
    assert '<th scope="col" id="channel-email">Email</th>' in html
    assert '<th scope="col" id="channel-portal">In portal</th>' in html
    # The seeded choices: the monthly statement off (asked for by those who want it), the rest on.
    assert "checked" not in next(b for b in boxes if 'name="email-monthly_statement"' in b)
    assert "checked" not in next(b for b in boxes if 'name="portal-monthly_statement"' in b)
    assert "checked" in next(b for b in boxes if 'name="email-invoice_issued"' in b)
    assert "checked" in next(b for b in boxes if 'name="portal-invoice_issued"' in b)
    assert '<label class="field-label" for="remind_days">Remind me before the due date</label>' in (
        html
    )
    assert '<option selected value="3">3 days</option>' in html
    assert 'href="/portal/notifications/inbox"' in html


def test_saving_stores_the_choices_and_audits_their_names(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    data = _form(client, email__invoice_issued=False, portal__payment_failed=False, remind_days=7)
    data["email-monthly_statement"] = "y"
    saved = client.post("/portal/notifications", data=data)
    assert saved.status_code == 303 and saved.headers["Location"] == "/portal/notifications"
    page = client.get("/portal/notifications").get_data(as_text=True)
    assert '<p class="flash flash-info">Notification preferences updated successfully</p>' in page
    assert '<option selected value="7">7 days</option>' in page
    user = _user(db)
    with tenancy.system(db):
        chosen = notifications.preferences(db, user)
        assert notifications.remind_days(db, user) == 7
    assert chosen[(NotificationTopic.INVOICE_ISSUED, EMAIL)] is False
    assert chosen[(NotificationTopic.PAYMENT_FAILED, PORTAL)] is False
    assert chosen[(NotificationTopic.MONTHLY_STATEMENT, EMAIL)] is True
    assert chosen[(NotificationTopic.INVOICE_ISSUED, PORTAL)] is True
    (event,) = _events(db, "Portal.NotificationPreferencesUpdated")
    assert sorted(event.properties["changed_fields"]) == [
        "invoice_issued.email",
        "monthly_statement.email",
        "payment_failed.portal",
        "remind_days",
    ]
    assert set(event.properties) == {"changed_fields"}  # names, never values
    # Saving again without a change records nothing more.
    assert client.post("/portal/notifications", data=_form(client)).status_code == 303
    assert len(_events(db, "Portal.NotificationPreferencesUpdated")) == 1


def test_a_checkbox_turned_off_is_a_channel_notify_skips(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    data = _form(client, email__payment_due=False, portal__payment_due=False)
    assert client.post("/portal/notifications", data=data).status_code == 303
    user = _user(db)
    tenancy.bind(db, tenancy.scope_for_user(user))
    with app.app_context():
        row = notify(app.extensions["portal.runtime"], db, user, DUE, key="off", params=PARAMS)
    assert row is not None and not row.in_portal and not row.by_email
    assert row.id not in [n.id for n in notifications.inbox(db, user).items]


def test_a_refused_reminder_keeps_the_form_by_htmx_and_without(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    data = _form(client, email__invoice_issued=False, remind_days="5")
    refused = client.post("/portal/notifications", data=data)
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert "Choose how many days before the due date." in html
    assert "<h1>Notification preferences</h1>" in html
    assert re.search(r'<input[^>]*name="email-invoice_issued"', html)
    assert not re.search(r'<input[^>]*checked[^>]*name="email-invoice_issued"', html)  # kept
    partial = client.post(
        "/portal/notifications",
        data=data,
        headers={"HX-Request": "true", "HX-Target": "notification-preferences"},
    )
    assert partial.status_code == 422
    html = partial.get_data(as_text=True)
    assert html.startswith('<form id="notification-preferences"') and "<h1>" not in html
    with tenancy.system(db):
        assert notifications.preferences(db, _user(db))[(NotificationTopic.INVOICE_ISSUED, EMAIL)]
    assert _events(db, "Portal.NotificationPreferencesUpdated") == []
    # Saved through htmx: the whole page again, with its toast (web.go).
    saved = client.post(
        "/portal/notifications",
        data=_form(client),
        headers={"HX-Request": "true", "HX-Target": "notification-preferences"},
    )
    assert saved.status_code == 204 and saved.headers["HX-Redirect"] == "/portal/notifications"


# the centre and the badge ------------------------------------------------------------------


def test_the_centre_lists_only_the_users_own_notifications(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    mine = _notice(app, db, "admin@acme.test", "INV-MINE")
    colleague = _notice(app, db, "ap@acme.test", "INV-COLLEAGUE")
    stranger = _notice(app, db, "admin@globex.test", "INV-STRANGER")
    page = client.get("/portal/notifications/inbox")
    assert page.status_code == 200
    html = readable(page.get_data(as_text=True))
    assert "<h1>Notification centre</h1>" in html
    assert "Invoice INV-MINE is due soon" in html
    assert "$123.45 is due on Dec 4, 2026." in html
    assert "INV-COLLEAGUE" not in html and "INV-STRANGER" not in html
    # Newest first: the one just made before the two the seed announced; unread said in words.
    titles = re.findall(r'<p class="notification-title">(.*?)</p>', html, re.DOTALL)
    assert "INV-MINE" in titles[0] and len(titles) == 3
    assert all('<span class="badge badge-unread">Unread</span>' in t for t in titles)
    # Someone else's id answers like a missing one, and changes nothing.
    token = csrf_token(client, "/portal/notifications/inbox")
    for other in (colleague, stranger, "ntf_missing"):
        refused = client.post(
            f"/portal/notifications/inbox/{other}/read", data={"csrf_token": token}
        )
        assert refused.status_code == 404
        assert "Notification not found." in refused.get_data(as_text=True)
    assert _read_at(db, colleague) is None
    assert _read_at(db, stranger) is None
    assert _read_at(db, mine) is None


def test_marking_one_read_by_htmx_swaps_the_list_and_the_badge_out_of_band(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    first = _notice(app, db, "admin@acme.test", "INV-ONE")
    html = client.get("/portal/dashboard").get_data(as_text=True)
    badge = _badge(html)
    assert "Notifications, 3 unread" in badge and 'aria-hidden="true">3</span>' in badge
    assert "data-hx-swap-oob" not in badge  # a whole page draws it in place
    token = csrf_token(client, "/portal/notifications/inbox")
    answer = client.post(
        f"/portal/notifications/inbox/{first}/read",
        data={"csrf_token": token, "page": "1"},
        headers=FRAGMENT,
    )
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert html.startswith('<div id="notification-list"') and "<header" not in html
    badge = _badge(html)
    assert 'data-hx-swap-oob="true"' in badge and "Notifications, 2 unread" in badge
    assert '<p id="notification-news" data-hx-swap-oob="innerHTML">' in html
    assert "Notification marked as read." in html
    # Its button became the word "Read", under the same id (focus stays there).
    assert f'<p id="mark-{first}" class="muted notification-state" tabindex="-1">' in html
    assert _read_at(db, first) is not None
    # Marking it again changes nothing and still answers.
    again = client.post(
        f"/portal/notifications/inbox/{first}/read",
        data={"csrf_token": token},
        headers=FRAGMENT,
    )
    assert again.status_code == 200 and "Notifications, 2 unread" in again.get_data(as_text=True)


def test_every_fragment_carries_the_badge_and_history_restore_gets_the_page(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    _notice(app, db, "admin@acme.test", "INV-NEW")
    results = client.get(
        "/portal/invoices?status=open",
        headers={"HX-Request": "true", "HX-Target": "invoice-results"},
    )
    html = results.get_data(as_text=True)
    assert "<header" not in html
    assert "Notifications, 3 unread" in _badge(html)
    assert 'data-hx-swap-oob="true"' in _badge(html)
    restored = client.get(
        "/portal/notifications/inbox",
        headers={**FRAGMENT, "HX-History-Restore-Request": "true"},
    )
    html = restored.get_data(as_text=True)
    assert html.startswith("<!doctype html>") and "<h1>Notification centre</h1>" in html
    assert "data-hx-swap-oob" not in _badge(html)
    # Signed out, a page has no badge at all.
    client.post("/logout", data={"csrf_token": csrf_token(client, "/portal/dashboard")})
    assert "notification-badge" not in client.get("/login").get_data(as_text=True)


def test_mark_all_read_without_javascript_goes_back_with_a_toast(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    _notice(app, db, "admin@acme.test", "INV-A")
    other = _notice(app, db, "ap@acme.test", "INV-THEIRS")
    token = csrf_token(client, "/portal/notifications/inbox")
    done = client.post(
        "/portal/notifications/inbox/read-all", data={"csrf_token": token, "page": "1"}
    )
    assert done.status_code == 303 and done.headers["Location"] == "/portal/notifications/inbox"
    html = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "All notifications marked as read." in html
    assert "Notifications, 0 unread" in _badge(html)
    assert 'class="badge badge-unread"' not in html
    assert (
        '<p id="mark-all" class="muted mark-all" tabindex="-1">No unread notifications.</p>' in html
    )
    assert _read_at(db, other) is None  # a colleague's stays unread
    # Without a CSRF token, nothing happens.
    assert client.post("/portal/notifications/inbox/read-all").status_code == 400


def test_the_centre_pages_and_says_when_it_is_empty(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    for number in range(notifications.PAGE_SIZE - 1):  # with the seeded two: one page and one
        _notice(app, db, "admin@acme.test", f"INV-P{number}")
    first = client.get("/portal/notifications/inbox").get_data(as_text=True)
    assert 'href="/portal/notifications/inbox?page=2" rel="next"' in first
    second = client.get("/portal/notifications/inbox?page=2", headers=FRAGMENT)
    html = second.get_data(as_text=True)
    assert html.startswith('<div id="notification-list"')
    assert 'rel="prev"' in html and 'rel="next"' not in html
    assert len(re.findall(r'<li class="notification', html)) == 1
    beyond = client.get("/portal/notifications/inbox?page=9").get_data(as_text=True)
    assert "No more notifications" in beyond
    for odd in ("x", "-3", "0", "٣", "9" * 5000):
        assert client.get(f"/portal/notifications/inbox?page={quote(odd)}").status_code == 200
    # Someone with no notifications at all is told where they will show.
    client.post("/logout", data={"csrf_token": csrf_token(client, "/portal/dashboard")})
    signed_in.sign_in("ap@acme.test")
    html = client.get("/portal/notifications/inbox").get_data(as_text=True)
    assert "No notifications yet" in html and "Notifications, 0 unread" in _badge(html)


# unsubscribe -------------------------------------------------------------------------------


def _token(app: Flask, db: Session, email: str, topic: NotificationTopic = DUE) -> str:
    return notifications.unsubscribe_token(
        _user(db, email), topic, keys=Keyring(TEST_SECRET), now=app.extensions["portal.clock"].now()
    )


def _email_choices(db: Session, email: str) -> dict[tuple[NotificationTopic, str], bool]:
    user = _user(db, email)
    with tenancy.system(db):
        return {(t, c.value): on for (t, c), on in notifications.preferences(db, user).items()}


def test_unsubscribe_asks_without_sign_in_and_turns_off_one_topic_by_one_click(
    app: Flask, db: Session
) -> None:
    token = _token(app, db, "ap@acme.test")
    before = _email_choices(db, "ap@acme.test")
    others = {e: _email_choices(db, e) for e in ("admin@acme.test", "admin@globex.test")}
    assert before[(DUE, "email")] is True
    asked = app.test_client().get(f"/unsubscribe/{token}")
    assert asked.status_code == 200
    text = readable(asked.get_data(as_text=True))
    assert "Stop e-mails about Payment due reminders to a•••@acme.test?" in text
    assert (
        '<button type="submit" class="button button-primary button-block">Unsubscribe</button>'
        in (text)
    )
    assert _email_choices(db, "ap@acme.test") == before  # asking changes nothing
    # A mail client's one-click POST: no cookie, no CSRF token.
    mail_client = app.test_client()
    done = mail_client.post(
        f"/unsubscribe/{token}",
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    assert "We won't e-mail a•••@acme.test about Payment due reminders any more." in readable(
        done.get_data(as_text=True)
    )
    assert 'href="/portal/notifications"' in done.get_data(as_text=True)
    after = _email_choices(db, "ap@acme.test")
    assert after[(DUE, "email")] is False
    assert {k: v for k, v in after.items() if k != (DUE, "email")} == {
        k: v for k, v in before.items() if k != (DUE, "email")
    }
    assert {e: _email_choices(db, e) for e in others} == others
    user_id = _user(db, "ap@acme.test").id
    (event,) = _events(db, "Portal.Unsubscribed")
    assert event.user_id == user_id and event.properties == {"topic": "payment_due"}
    # Again (a retry, a second click): the same answer, nothing more recorded.
    again = mail_client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert len(_events(db, "Portal.Unsubscribed")) == 1


def test_unsubscribe_works_while_someone_else_is_signed_in(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    token = _token(app, db, "admin@globex.test", NotificationTopic.STATEMENT_READY)
    done = client.post(f"/unsubscribe/{token}")
    assert done.status_code == 200
    assert _email_choices(db, "admin@globex.test")[
        (NotificationTopic.STATEMENT_READY, "email")
    ] is (False)
    assert _email_choices(db, "admin@acme.test")[(NotificationTopic.STATEMENT_READY, "email")]


def test_one_click_posts_from_one_mail_provider_are_limited_per_link_not_per_address(
    app: Flask, db: Session
) -> None:
    """RFC 8058: the provider's servers post every recipient's unsubscribe from a few IPs."""
    topics = [
        t
        for t in NotificationTopic
        if t is not NotificationTopic.MONTHLY_STATEMENT and t not in notifications.ALWAYS_ON
    ]
    tokens = [_token(app, db, e, t) for e in ("ap@acme.test", "admin@acme.test") for t in topics]
    assert len(tokens) > 10  # more than one IP may sign in within a minute
    provider = {"REMOTE_ADDR": "209.85.220.41"}
    client = app.test_client()

    def one_click(token: str) -> int:
        return client.post(
            f"/unsubscribe/{token}",
            data="List-Unsubscribe=One-Click",
            content_type="application/x-www-form-urlencoded",
            environ_base=provider,
        ).status_code

    assert [one_click(token) for token in tokens] == [200] * len(tokens)
    assert _email_choices(db, "admin@acme.test")[(DUE, "email")] is False
    # One link posted over and over is still held back.
    assert [one_click(tokens[0]) for _ in range(9)] == [200] * 9
    assert one_click(tokens[0]) == 429


def test_an_altered_expired_or_ownerless_link_is_refused_and_changes_nothing(
    app: Flask, db: Session
) -> None:
    token = _token(app, db, "ap@acme.test")
    before = _email_choices(db, "ap@acme.test")
    nobody = PortalUser(public_id="usr_nobody")
    ownerless = notifications.unsubscribe_token(
        nobody, DUE, keys=Keyring(TEST_SECRET), now=app.extensions["portal.clock"].now()
    )
    foreign = notifications.unsubscribe_token(
        _user(db, "ap@acme.test"),
        DUE,
        keys=Keyring("another secret entirely, long enough"),
        now=app.extensions["portal.clock"].now(),
    )
    client = app.test_client()
    for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), ownerless, foreign):
        for method in ("GET", "POST"):
            answer = client.open(f"/unsubscribe/{bad}", method=method)
            assert answer.status_code == 404, (bad, method)
            assert "This unsubscribe link is not valid." in answer.get_data(as_text=True)
    app.extensions["portal.clock"].advance(notifications.UNSUBSCRIBE_LIFETIME + timedelta(days=1))
    expired = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert expired.status_code == 404
    assert _email_choices(db, "ap@acme.test") == before
    assert _events(db, "Portal.Unsubscribed") == []


def test_a_link_mailed_to_an_address_the_user_changed_since_is_refused(
    app: Flask, db: Session
) -> None:
    token = _token(app, db, "ap@acme.test")
    before = _email_choices(db, "ap@acme.test")
    user = _user(db, "ap@acme.test")
    with tenancy.system(db):
        user.email = "nora@newco.test"
        db.commit()
    client = app.test_client()
    for method in ("GET", "POST"):
        answer = client.open(f"/unsubscribe/{token}", method=method)
        assert answer.status_code == 404, method
        page = answer.get_data(as_text=True)
        assert "This unsubscribe link is not valid." in page
        assert "newco.test" not in page and "acme.test" not in page
    assert _email_choices(db, "nora@newco.test") == before
    assert _events(db, "Portal.Unsubscribed") == []
    # A link mailed to the new address works.
    fresh = _token(app, db, "nora@newco.test")
    assert client.post(f"/unsubscribe/{fresh}").status_code == 200


@FUZZ
@given(token=st.one_of(TEXT, st.text(max_size=300)), post=st.booleans())
def test_any_token_is_answered_without_an_error(
    app: Flask, db: Session, token: str, post: bool
) -> None:
    path = "/unsubscribe/" + quote(token, safe="")
    answer = app.test_client().open(path, method="POST" if post else "GET")
    assert answer.status_code in {400, 404, 405, 308, 429}, (token, answer.status_code)
    assert _events(db, "Portal.Unsubscribed") == []


def test_a_page_counts_the_unread_once_through_an_index(
    client: FlaskClient, signed_in: Auth, connection: Connection, count_queries: QueryCounter
) -> None:
    count_queries.statements.clear()
    assert client.get("/portal/dashboard").status_code == 200
    counts = [s for s in count_queries.statements if re.search(r"\bFROM notifications\b", s)]
    assert len(counts) == 1, counts
    user_id = connection.exec_driver_sql(
        "SELECT id FROM portal_users WHERE email = 'admin@acme.test'"
    ).scalar_one()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a tiny table: ask plainly
        plan = " ".join(
            connection.exec_driver_sql(
                "EXPLAIN SELECT count(*) FROM notifications WHERE user_id = %(u)s "
                "AND in_portal = true AND read_at IS NULL",
                {"u": user_id},
            ).scalars()
        )
        # By the user's rows through an index (on a table this small the planner may take either
        # index that starts with user_id), never a scan.
        assert "Seq Scan" not in plan and re.search(r"Index Cond: \(+user_id = ", plan), plan
    else:
        plan = " ".join(
            str(row[3])
            for row in connection.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM notifications WHERE user_id = ? "
                "AND in_portal = 1 AND read_at IS NULL",
                (user_id,),
            )
        )
        assert "USING COVERING INDEX ix_notifications_user_shown_read" in plan, plan
