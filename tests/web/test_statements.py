"""Statements: asking for one, the job, the list's states, the ready mail and the signed link."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import AuditEvent, BillingAccount, Statement, StatementState
from tests.conftest import Auth, Inbox, readable

pytestmark = pytest.mark.usefixtures("connection")


def _form(client: FlaskClient, **fields: object) -> dict[str, object]:
    page = client.get("/portal/statements")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    assert token, "the form carries its CSRF token"
    accounts = re.findall(r'name="accounts" type="checkbox" value="([^"]+)"', page.text)
    return {"csrf_token": token.group(1), "format": "csv", "accounts": accounts, **fields}


def _today(app: Flask) -> str:
    return str(app.extensions["portal.clock"].today().isoformat())


def _run(app: Flask) -> int:
    return int(app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now()))


def _statements(db: Session) -> list[Statement]:
    with tenancy.system(db):
        return list(db.scalars(select(Statement).order_by(Statement.id)))


def test_page_has_the_contracts_fields(client: FlaskClient, signed_in: Auth) -> None:
    page = client.get("/portal/statements")
    assert page.status_code == 200
    text = page.text
    assert "<h1>Statements</h1>" in text
    for label in ("Start Date", "End Date", "Format", "Request statement"):
        assert label in text
    for choice in (">PDF<", ">Excel<", ">CSV<"):
        assert choice in text
    assert "Acme West" in text and "Acme East" in text  # an admin chooses among accounts


def test_request_runs_and_delivers_once(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, smtp: Inbox
) -> None:
    today = _today(app)
    response = client.post(
        "/portal/statements", data=_form(client, start_date="2026-01-01", end_date=today)
    )
    assert response.status_code == 303
    (statement,) = _statements(db)
    assert statement.state is StatementState.QUEUED
    listed = client.get("/portal/statements").text
    assert "Queued" in listed and 'http-equiv="refresh"' in listed  # it refreshes without JS
    assert _run(app) == 2  # the statement, then its mail
    db.expire_all()
    (statement,) = _statements(db)
    assert statement.state is StatementState.READY and statement.progress == 100
    assert statement.storage_key and statement.size_bytes and statement.sha256
    assert _run(app) == 0  # nothing more: one file, one mail
    assert len(smtp.messages) == 1
    message = smtp.messages[0]
    assert message["Subject"] == "Your statement is ready"
    parts = {part.get_content_type(): part for part in message.walk()}
    assert "text/plain" in parts and "text/html" in parts
    link = re.search(
        r"http://localhost(/portal/download/\S+)",
        parts["text/plain"].get_payload(decode=True).decode(),
    )
    assert link
    download = client.get(link.group(1))
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment")
    import hashlib

    assert hashlib.sha256(download.data).hexdigest() == statement.sha256
    download.close()
    with tenancy.system(db):
        events = db.scalar(
            select(func.count(AuditEvent.id)).where(AuditEvent.name == "Portal.StatementDownloaded")
        )
    assert events == 1
    listed = client.get("/portal/statements").text
    assert "Ready" in listed and "Download" in listed and 'http-equiv="refresh"' not in listed


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-03-01", "2026-02-01", "The end date must be on or after the start date."),
        ("2020-01-01", "2026-01-01", "A statement can cover at most 366 days."),
        ("", "2026-01-01", "Enter a start date."),
        ("not a date", "2026-01-01", "Not a valid date value."),
    ],
)
def test_bad_ranges_are_refused_inline(
    app: Flask,
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    start: str,
    end: str,
    message: str,
) -> None:
    response = client.post("/portal/statements", data=_form(client, start_date=start, end_date=end))
    assert response.status_code == 422
    assert message in readable(response.text)
    assert _statements(db) == []


def test_future_end_is_refused(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    tomorrow = (app.extensions["portal.clock"].today() + timedelta(days=1)).isoformat()
    response = client.post(
        "/portal/statements", data=_form(client, start_date="2026-01-01", end_date=tomorrow)
    )
    assert response.status_code == 422
    assert "The end date can't be in the future." in readable(response.text)


@pytest.mark.parametrize("signed_in", ["ap@acme.test"], indirect=True)
def test_restricted_user_cannot_include_another_account(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    with tenancy.system(db):
        east = db.scalars(select(BillingAccount).where(BillingAccount.name == "Acme East")).one()
    response = client.post(
        "/portal/statements",
        data=_form(
            client, start_date="2026-01-01", end_date=_today(app), accounts=[east.public_id]
        ),
    )
    assert response.status_code == 422
    assert _statements(db) == []


def test_others_links_and_tampering_are_refused(
    app: Flask, client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in("admin@acme.test")
    client.post(
        "/portal/statements", data=_form(client, start_date="2026-01-01", end_date=_today(app))
    )
    _run(app)
    page = client.get("/portal/statements").text
    link = re.search(r'href="(/portal/download/[^"]+)"', page)
    assert link
    href = link.group(1)
    tampered = href[:-3] + ("AAA" if not href.endswith("AAA") else "BBB")
    refused = client.get(tampered)
    assert refused.status_code == 404 and "Download link not valid" in refused.text
    auth.logout()
    auth.sign_in("ap@acme.test")
    foreign = client.get(href)
    assert foreign.status_code == 404 and "made for another user" in foreign.text
    assert "Content-Disposition" not in foreign.headers
    assert "No statements yet." in readable(client.get("/portal/statements").text)
    auth.logout()
    app.extensions["portal.clock"].advance(timedelta(hours=24, seconds=1))
    auth.sign_in("admin@acme.test")
    expired = client.get(href)
    assert expired.status_code == 410 and "Download link expired" in expired.text
    fresh = re.search(r'href="(/portal/download/[^"]+)"', client.get("/portal/statements").text)
    assert fresh and fresh.group(1) != href  # the page gives a new link while the file is kept
    opened = client.get(fresh.group(1))
    assert opened.status_code == 200
    opened.close()


def test_flag_off_hides_statements(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    from portal.models import FeatureFlag

    with tenancy.system(db):
        db.add(FeatureFlag(name="m25_portal_statements", enabled=False))
        db.commit()
    closed = client.get("/portal/statements")
    assert closed.status_code == 503
    assert "Statements aren&#39;t available right now." in closed.get_data(as_text=True)
    dashboard = client.get("/portal/dashboard").text
    assert 'href="/portal/statements"' not in dashboard


def test_the_polling_list_announces_the_outcome(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session, count_queries: object
) -> None:
    client.post(
        "/portal/statements", data=_form(client, start_date="2026-01-01", end_date=_today(app))
    )
    (statement,) = _statements(db)
    page = client.get("/portal/statements").text
    assert f"watch={statement.public_id}" in page and 'data-hx-trigger="load delay:2s"' in page
    headers = {"HX-Request": "true", "HX-Target": "statement-list"}
    polled = client.get(f"/portal/statements?watch={statement.public_id}", headers=headers)
    assert polled.text.lstrip().startswith('<div id="statement-list"')
    assert "statement-news" not in polled.text  # nothing to say yet
    _run(app)
    from tests.conftest import QueryCounter

    assert isinstance(count_queries, QueryCounter)
    before = count_queries.count
    polled = client.get(f"/portal/statements?watch={statement.public_id}", headers=headers)
    assert count_queries.count - before <= 5, count_queries.statements[before:]
    assert 'id="statement-news" data-hx-swap-oob="innerHTML"' in polled.text
    assert "is ready to download" in polled.text
    assert "data-hx-trigger" not in polled.text  # nothing left to wait for: polling stops


def test_a_mailed_link_opened_signed_out_leads_through_sign_in_to_the_file(
    app: Flask, client: FlaskClient, auth: Auth, db: Session, smtp: Inbox
) -> None:
    auth.sign_in("admin@acme.test")
    client.post(
        "/portal/statements", data=_form(client, start_date="2026-01-01", end_date=_today(app))
    )
    _run(app)
    (plain,) = [p for p in smtp.messages[0].walk() if p.get_content_type() == "text/plain"]
    body = plain.get_payload(decode=True).decode()
    link = re.search(r"http://localhost(/portal/download/\S+)", body)
    assert link
    auth.logout()
    away = client.get(link.group(1))
    assert away.status_code == 302 and away.headers["Location"].startswith("/login?next=")
    app.extensions["portal.clock"].advance(timedelta(seconds=30))
    assert auth.login("admin@acme.test", next=link.group(1)).status_code == 302
    back = auth.code()
    assert back.status_code == 302 and back.headers["Location"] == link.group(1)
    opened = client.get(link.group(1))
    assert opened.status_code == 200 and opened.data.startswith(b"\xef\xbb\xbf")
    opened.close()


def test_a_missing_file_is_refused_and_records_no_download(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    client.post(
        "/portal/statements", data=_form(client, start_date="2026-01-01", end_date=_today(app))
    )
    _run(app)
    (statement,) = _statements(db)
    link = re.search(r'href="(/portal/download/[^"]+)"', client.get("/portal/statements").text)
    assert link and statement.storage_key
    app.extensions["portal.runtime"].store.delete(statement.storage_key)
    gone = client.get(link.group(1))
    assert gone.status_code == 410 and "Download link expired" in gone.text
    with tenancy.system(db):
        recorded = db.scalar(
            select(func.count(AuditEvent.id)).where(AuditEvent.name == "Portal.StatementDownloaded")
        )
    assert recorded == 0


@pytest.mark.parametrize("signed_in", ["ap@acme.test"], indirect=True)
def test_an_account_taken_away_closes_its_statements_links(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    client.post(
        "/portal/statements", data=_form(client, start_date="2026-01-01", end_date=_today(app))
    )
    _run(app)
    link = re.search(r'href="(/portal/download/[^"]+)"', client.get("/portal/statements").text)
    assert link
    from portal.models import UserAccountGrant

    with tenancy.system(db):
        for grant in db.scalars(select(UserAccountGrant)):
            if grant.user.email == "ap@acme.test":
                db.delete(grant)
        db.commit()
    refused = client.get(link.group(1))
    assert refused.status_code in (404, 410) and "Content-Disposition" not in refused.headers


def test_a_double_click_makes_one_statement(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    form = _form(client, start_date="2026-01-01", end_date=_today(app))
    assert client.post("/portal/statements", data=form).status_code == 303
    assert client.post("/portal/statements", data=form).status_code == 303
    assert len(_statements(db)) == 1
    assert _run(app) == 2  # one statement, then its one mail
    # Once that one is ready, the same request makes a new statement.
    assert client.post("/portal/statements", data=form).status_code == 303
    assert len(_statements(db)) == 2
    other = _form(client, start_date="2026-01-01", end_date=_today(app), format="pdf")
    assert client.post("/portal/statements", data=other).status_code == 303
    assert len(_statements(db)) == 3  # another format is another statement


@pytest.mark.parametrize("signed_in", ["ap@acme.test"], indirect=True)
def test_a_user_without_accounts_is_told_so(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    from portal.models import UserAccountGrant

    with tenancy.system(db):
        for grant in db.scalars(select(UserAccountGrant)):
            if grant.user.email == "ap@acme.test":
                db.delete(grant)
        db.commit()
    page = client.get("/portal/statements")
    assert page.status_code == 200
    assert "No billing accounts" in page.text and "Request statement" not in page.text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    assert token is None  # no form to send
    refused = client.post(
        "/portal/statements",
        data={"start_date": "2026-01-01", "end_date": "2026-01-31", "format": "csv"},
    )
    assert refused.status_code in (400, 422)
    assert _statements(db) == []
