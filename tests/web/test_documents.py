"""The documents library: who sees what, its filters, its htmx fragment, and its files leaving
only through signed links made for the user signed in."""

from __future__ import annotations

import hashlib
import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from portal import tenancy
from portal.models import AuditEvent, Company, Document, FeatureFlag, Role
from portal.services import downloads
from portal.services.crypto import Keyring
from portal.services.downloads import FileKind
from tests.conftest import TEST_SECRET, Auth, Backend, QueryCounter, readable, user_by_email
from tests.factories import (
    account_named,
    company_named,
    make_company,
    make_document,
    make_user,
)

ACME = ("Master services agreement", "Credit note CN-301", "Delivery note DN-2003")
GLOBEX = ("Gutschrift GS-501", "Rahmenvertrag 2026")
LINK = re.compile(r'href="(/portal/download/[^"]+)"')


def page(client: FlaskClient, query: str = "", **headers: str) -> str:
    response = client.get(f"/portal/documents{query}", headers=headers)
    assert response.status_code == 200, response.status_code
    return readable(response.get_data(as_text=True))


def titles(text: str) -> list[str]:
    return re.findall(r'<span class="document-title">([^<]+)</span>', text)


def seeded(db: Session, title: str) -> Document:
    with tenancy.system(db):
        return db.scalars(
            select(Document).where(Document.title == title).options(joinedload(Document.invoice))
        ).one()


def link_for(text: str, title: str) -> str:
    """The Download link of the row titled `title`."""
    row = next(r for r in text.split("<tr>") if f'"document-title">{title}<' in r)
    found = LINK.search(row)
    assert found, row
    return html.unescape(found.group(1))


def stored_bytes(client: FlaskClient, url: str) -> bytes:
    with client.get(url) as response:  # closing it closes the stored file
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.headers["Content-Disposition"].startswith("attachment")
        assert response.headers["Cache-Control"] == "private, no-store"
        return response.get_data()


def switch_off(db: Session) -> None:
    with tenancy.system(db):
        db.merge(FeatureFlag(name="m25_portal_documents", enabled=False))
        db.commit()


# who sees what ----------------------------------------------------------------------------


def test_a_company_admin_sees_every_document_of_the_company(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    text = page(client)
    assert "<h1>Documents</h1>" in text
    assert sorted(titles(text)) == sorted(ACME)
    assert not any(title in text for title in GLOBEX)
    contract = next(r for r in text.split("<tr>") if "Master services agreement" in r)
    assert "All accounts" in contract and "Contract" in contract
    credit = next(r for r in text.split("<tr>") if "Credit note CN-301" in r)
    inv = seeded(db, "Credit note CN-301").invoice
    assert inv is not None
    assert f'href="/portal/invoices/{inv.public_id}">' in credit and "INV-1003" in credit
    assert "Acme West" in credit and 'class="badge badge-document">Credit note<' in credit
    assert "3 documents" in text
    assert 'name="account"' in text  # two accounts: the account filter shows
    assert 'href="/portal/documents" aria-current="page"' in text


@pytest.mark.parametrize("signed_in", ["ap@acme.test"], indirect=True)
def test_a_restricted_user_sees_only_the_documents_of_its_accounts(
    client: FlaskClient, signed_in: Auth
) -> None:
    text = page(client)
    assert titles(text) == ["Credit note CN-301"]
    assert "Master services agreement" not in text  # the company's: company-wide users only
    assert 'name="account"' not in text  # one account: nothing to choose
    assert "Showing billing account Acme West" in text


def test_another_company_never_sees_acmes_documents(
    app: Flask, client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in("admin@globex.test")
    text = page(client)
    assert sorted(titles(text)) == sorted(GLOBEX)
    assert not any(title in text for title in ACME)
    # A link to an Acme document, signed for the Globex user, still opens nothing.
    acme_paper = seeded(db, "Master services agreement")
    greta = user_by_email(db, "admin@globex.test")
    token = downloads.sign(
        FileKind.DOCUMENT,
        acme_paper.public_id,
        greta.public_id,
        keys=Keyring(TEST_SECRET),
        now=app.extensions["portal.clock"].now(),
    )
    response = client.get(f"/portal/download/{token}")
    assert response.status_code in (404, 410)
    assert b"%PDF" not in response.get_data()
    assert "Content-Disposition" not in response.headers


def test_a_globex_link_made_for_an_acme_user_opens_nothing(
    app: Flask, client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    globex_paper = seeded(db, "Rahmenvertrag 2026")
    alex = user_by_email(db, "admin@acme.test")
    token = downloads.sign(
        FileKind.DOCUMENT,
        globex_paper.public_id,
        alex.public_id,
        keys=Keyring(TEST_SECRET),
        now=app.extensions["portal.clock"].now(),
    )
    response = client.get(f"/portal/download/{token}")
    assert response.status_code in (404, 410)
    assert b"%PDF" not in response.get_data()
    assert "Content-Disposition" not in response.headers


# filters, search, paging --------------------------------------------------------------------


def test_filter_by_type(client: FlaskClient, signed_in: Auth) -> None:
    assert titles(page(client, "?type=contract")) == ["Master services agreement"]
    assert titles(page(client, "?type=delivery_note")) == ["Delivery note DN-2003"]
    assert titles(page(client, "?type=tax_form")) == []


def test_search_title_and_file_name_case_insensitively(
    client: FlaskClient, signed_in: Auth, db: Session, backend: Backend
) -> None:
    acme = company_named(db, "Acme Corp")
    make_document(db, acme, backend.storage, "Insurance certificate", filename="ins_cert-100%.pdf")
    assert titles(page(client, "?q=cn-301")) == ["Credit note CN-301"]
    assert titles(page(client, "?q=MASTER%20services")) == ["Master services agreement"]
    assert titles(page(client, "?q=delivery-note-dn")) == ["Delivery note DN-2003"]  # file name
    # LIKE's wildcards are plain characters.
    assert titles(page(client, "?q=100%25")) == ["Insurance certificate"]
    assert titles(page(client, "?q=ins_cert")) == ["Insurance certificate"]
    assert titles(page(client, "?q=ins%25cert")) == []
    assert titles(page(client, "?q=insXcert")) == []
    assert titles(page(client, "?q=%5C")) == []


def test_filter_by_date(
    client: FlaskClient, signed_in: Auth, db: Session, backend: Backend
) -> None:
    acme = company_named(db, "Acme Corp")
    make_document(db, acme, backend.storage, "Old tax form", days_ago=40)
    today = backend.today
    day = (today - timedelta(days=40)).isoformat()
    assert titles(page(client, f"?from={day}&to={day}")) == ["Old tax form"]
    assert "Old tax form" not in titles(page(client, f"?from={today.isoformat()}"))
    assert sorted(titles(page(client, f"?to={(today - timedelta(days=1)).isoformat()}"))) == [
        "Old tax form"
    ]
    refused = page(client, f"?from={today.isoformat()}&to={day}")
    assert "The end date must be on or after the start date." in refused


def test_filter_by_date_takes_the_days_of_the_viewers_time_zone(
    client: FlaskClient, signed_in: Auth, db: Session, backend: Backend
) -> None:
    acme = company_named(db, "Acme Corp")
    late = make_document(db, acme, backend.storage, "Late upload")
    with tenancy.system(db):
        late.created_at = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)  # 2 June, 01:30 in Berlin
        user_by_email(db, "admin@acme.test").timezone = "Europe/Berlin"
    db.commit()
    assert "Late upload" in titles(page(client, "?from=2026-06-02&to=2026-06-02"))
    assert "Late upload" not in titles(page(client, "?from=2026-06-01&to=2026-06-01"))


def test_filter_by_account(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    east = account_named(db, "Acme East")
    assert titles(page(client, f"?account={east.public_id}")) == ["Delivery note DN-2003"]
    # An account that is not one of the choices is refused and the list stays whole.
    text = page(client, "?account=acct_nope")
    assert "Not a valid choice." in text and len(titles(text)) == 3


def test_newest_first_and_paged(
    client: FlaskClient, auth: Auth, db: Session, backend: Backend
) -> None:
    company = make_company(db, "Paper Trail Ltd")
    make_user(db, company, "clerk@paper.test")
    for n in range(30):
        make_document(db, company, backend.storage, f"Form {n:02d}", days_ago=n)
    auth.sign_in("clerk@paper.test")
    first = page(client)
    assert titles(first) == [f"Form {n:02d}" for n in range(25)]
    assert "30 documents, page 1 of 2" in first
    second = page(client, "?page=2")
    assert titles(second) == [f"Form {n:02d}" for n in range(25, 30)]
    assert 'href="/portal/documents?page=1"' in second


@pytest.mark.parametrize("number", ["0", "-1", "abc", "9" * 30])
def test_a_page_number_out_of_reach_shows_a_page_that_exists(
    client: FlaskClient, signed_in: Auth, number: str
) -> None:
    text = page(client, f"?page={number}")
    assert sorted(titles(text)) == sorted(ACME)


def test_empty_states(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in("admin@initech.test")
    text = page(client)
    assert "No documents yet" in text and "0 documents" in text
    narrowed = page(client, "?q=anything")
    assert "No documents match these filters" in narrowed
    assert 'href="/portal/documents">Clear filters' in narrowed


def test_the_library_is_a_real_get_form_that_htmx_enhances(
    client: FlaskClient, signed_in: Auth
) -> None:
    text = page(client)
    assert '<form class="card filters" method="get" action="/portal/documents"' in text
    for name in ('name="type"', 'name="q"', 'name="from"', 'name="to"', 'name="account"'):
        assert name in text
    assert 'data-hx-target="#document-results"' in text and 'data-hx-push-url="true"' in text


def test_htmx_gets_the_results_fragment_with_the_live_count(
    client: FlaskClient, signed_in: Auth
) -> None:
    response = client.get(
        "/portal/documents?type=contract",
        headers={"HX-Request": "true", "HX-Target": "document-results"},
    )
    fragment = readable(response.get_data(as_text=True))
    assert response.status_code == 200
    assert "<html" not in fragment and "<h1>" not in fragment
    assert titles(fragment) == ["Master services agreement"]
    assert 'data-hx-swap-oob="innerHTML:#result-count">1 document<' in fragment
    assert 'data-hx-swap-oob="innerHTML:#filter-summary">Filters: Contract<' in fragment
    assert "HX-Request" in response.headers["Vary"]
    # A boosted request or an unknown target gets the whole page.
    whole = client.get(
        "/portal/documents", headers={"HX-Request": "true", "HX-Target": "somewhere"}
    ).get_data(as_text=True)
    assert "<h1>Documents</h1>" in whole


def test_sizes_are_human_readable_and_localized(
    client: FlaskClient, auth: Auth, db: Session, backend: Backend
) -> None:
    company = make_company(db, "Sizes GmbH", locale="de_DE", currency="EUR")
    make_user(db, company, "size@sizes.test", locale="de")
    make_document(db, company, backend.storage, "Big", content=b"x" * 1536)
    auth.sign_in("size@sizes.test")
    text = page(client)
    assert "1,5 kB" in text


def test_the_list_costs_a_few_queries_whatever_the_number_of_documents(
    client: FlaskClient, signed_in: Auth, db: Session, backend: Backend, count_queries: QueryCounter
) -> None:
    page(client)
    count_queries.statements.clear()
    page(client)
    few = count_queries.count
    acme = company_named(db, "Acme Corp")
    west = account_named(db, "Acme West")
    for n in range(40):
        make_document(db, acme, backend.storage, f"Note {n}", account=west if n % 2 else None)
    page(client)
    count_queries.statements.clear()
    page(client, "?page=2")
    # the session with its user, the flags, the accounts, the count and the page, and the
    # header's unread notifications (measured: 6)
    assert count_queries.count <= 6, count_queries.statements
    assert count_queries.count == few, count_queries.statements


# downloads -------------------------------------------------------------------------------


def test_a_download_gives_the_exact_bytes_and_is_audited(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    url = link_for(page(client), "Master services agreement")
    body = stored_bytes(client, url)
    document = seeded(db, "Master services agreement")
    assert hashlib.sha256(body).hexdigest() == document.sha256 and len(body) == document.size_bytes
    with tenancy.system(db):
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.name == "Portal.DocumentDownloaded")
        ).all()
    assert [(e.properties["document_id"], e.properties["kind"]) for e in events] == [
        (document.public_id, "contract")
    ]


def test_an_expired_link_is_refused_with_a_page(
    app: Flask, client: FlaskClient, signed_in: Auth
) -> None:
    url = link_for(page(client), "Credit note CN-301")
    app.extensions["portal.clock"].advance(timedelta(hours=24, seconds=1))
    signed_in.sign_in()  # the session has long ended too
    response = client.get(url)
    assert response.status_code == 410
    text = response.get_data(as_text=True)
    assert "Download link expired" in text and "Content-Disposition" not in response.headers
    assert b"%PDF" not in response.get_data()
    # A fresh page gives a fresh link.
    assert stored_bytes(client, link_for(page(client), "Credit note CN-301")).startswith(b"%PDF")


def test_an_altered_link_is_refused(client: FlaskClient, signed_in: Auth) -> None:
    url = link_for(page(client), "Credit note CN-301")
    for altered in (url[:-2] + ("AA" if not url.endswith("AA") else "BB"), url + "x", url[:40]):
        response = client.get(altered)
        assert response.status_code == 404, altered
        assert "This download link is incomplete or was changed." in response.get_data(as_text=True)
        assert b"%PDF" not in response.get_data()


def test_a_link_made_for_another_user_is_refused(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in("admin@acme.test")
    url = link_for(page(client), "Credit note CN-301")
    auth.logout()
    auth.sign_in("ap@acme.test")  # may see the document, but the link is not theirs
    response = client.get(url)
    assert response.status_code == 404
    assert "This link was made for another user." in response.get_data(as_text=True)
    assert b"%PDF" not in response.get_data()


def test_a_link_needs_a_signed_in_user(client: FlaskClient, signed_in: Auth) -> None:
    url = link_for(page(client), "Credit note CN-301")
    signed_in.logout()
    response = client.get(url)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_access_revoked_after_the_link_was_made_opens_nothing(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    acme = company_named(db, "Acme Corp")
    west = account_named(db, "Acme West")
    make_user(db, acme, "temp@acme.test", role=Role.CUSTOMER, accounts=[west])
    auth.sign_in("temp@acme.test")
    url = link_for(page(client), "Credit note CN-301")
    paper = seeded(db, "Credit note CN-301")
    with tenancy.system(db):
        paper.billing_account_id = account_named(db, "Acme East").id
        db.commit()
    response = client.get(url)
    assert response.status_code in (404, 410) and b"%PDF" not in response.get_data()


# the rollout flag ---------------------------------------------------------------------------


def test_flag_off_closes_the_library_its_downloads_and_its_menu_entry(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    url = link_for(page(client), "Credit note CN-301")
    assert 'href="/portal/documents"' in client.get("/portal/dashboard").get_data(as_text=True)
    switch_off(db)
    closed = client.get("/portal/documents")
    assert closed.status_code == 503
    assert "Documents aren&#39;t available right now." in closed.get_data(as_text=True)
    refused = client.get(url)
    assert refused.status_code == 503 and b"%PDF" not in refused.get_data()
    assert "Documents aren&#39;t available right now." in refused.get_data(as_text=True)
    assert 'href="/portal/documents"' not in client.get("/portal/dashboard").get_data(as_text=True)
    inv = seeded(db, "Credit note CN-301").invoice
    assert inv is not None
    detail = readable(client.get(f"/portal/invoices/{inv.public_id}").get_data(as_text=True))
    assert "/portal/download/" not in detail and "CN-301" in detail


def test_a_foreign_company_is_not_the_only_wall(db: Session, app: Flask) -> None:
    """The library's query is scoped like any other: Globex's session finds no Acme row."""
    session = app.extensions["portal.db"].sessionmaker()
    try:
        globex: Company = company_named(db, "Globex GmbH")
        tenancy.bind(session, tenancy.Scope(globex.id))
        found = session.scalars(select(Document.title)).all()
        assert sorted(found) == sorted(GLOBEX)
    finally:
        session.close()
