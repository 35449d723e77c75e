"""The API's read endpoints: invoices (list, one, its PDF), documents and Payment History.

Every answer is checked against the published spec; the lists are walked page by page (keyset
cursors) and compared with what the pages' services list; a foreign id is 404; bad filters and
cursors are 400 problems, never 500; a page's queries do not grow with the history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import api, clock, tenancy
from portal.models import AuditEvent, BillingAccount, FeatureFlag, Invoice, TokenScope
from portal.services import documents, invoices, payment_history
from portal.services.documents import DocumentQuery
from portal.services.invoices import InvoiceQuery
from portal.services.payment_history import HistoryQuery
from tests.api.conftest import PROBLEM, SpecCheck
from tests.conftest import Auth, Backend, QueryCounter, scoped_session
from tests.factories import (
    account_named,
    company_named,
    make_document,
    make_invoice,
    make_payment,
)
from tests.web.fuzz_helpers import DATE_SPELLINGS, FUZZ, NUMBER_SPELLINGS, ODD

Bearer = Callable[..., dict[str, str]]
LIST = "/api/portal/invoices"
ONE = "/api/portal/invoices/{public_id}"
PDF = "/api/portal/invoices/{public_id}/pdf"
DOCS = "/api/portal/documents"
HISTORY = "/api/portal/payment-history"


def _public_id(db: Session, number: str) -> str:
    with tenancy.system(db):
        return db.scalars(select(Invoice.public_id).where(Invoice.number == number)).one()


def walk(
    client: FlaskClient, spec_check: SpecCheck, path: str, headers: dict[str, str], **args: Any
) -> list[dict[str, Any]]:
    """Every item of a list, following `next_cursor` to the last page (each page checked)."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(1000):
        query = {**args, **({"after": after} if after else {})}
        response = client.get(f"{path}?{urlencode(query)}", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = spec_check(response, path)
        assert len(body["items"]) <= body["page"]["limit"]
        items += body["items"]
        after = body["page"]["next_cursor"]
        if after is None:
            return items
        assert len(body["items"]) == body["page"]["limit"]  # only a full page has a next
    raise AssertionError("the pages never ended")


def page_ids(fetch: Callable[[int], Any]) -> list[str]:
    """Every row the page's service lists, page by page (OFFSET, as the page reads them)."""
    found: list[str] = []
    number = 1
    while True:
        page = fetch(number)
        found += [getattr(row, "document", row).public_id for row in page.items]
        if number >= page.pages:
            return found
        number += 1


@pytest.fixture
def ties(db: Session) -> None:
    """Invoices that tie on every sortable column but the id (so a cursor must break ties)."""
    west = account_named(db, "Acme West")
    for n in range(7):
        make_invoice(db, west, "250.00", issued=-3, due=11, number=f"TIE-{n}")


# invoices ---------------------------------------------------------------------------------

FILTERS = [
    {},
    {"sort": "date"},
    {"sort": "-due"},
    {"sort": "amount"},
    {"sort": "-amount"},
    {"sort": "status"},
    {"sort": "-number"},
    {"sort": "number", "status": "overdue"},
    {"status": "paid"},
    {"q": "INV", "sort": "-status"},
    {"q": "tie", "sort": "amount"},
]


@pytest.mark.parametrize("email", ["admin@acme.test", "ap@acme.test"])
def test_invoice_pages_hold_every_row_once_as_the_list_does(
    app: Flask,
    client: FlaskClient,
    bearer: Bearer,
    spec_check: SpecCheck,
    ties: None,
    email: str,
) -> None:
    headers = bearer(email, scope=TokenScope.READ)
    session = scoped_session(app, email)
    today = clock.today()
    for args in FILTERS:
        walked = walk(client, spec_check, LIST, headers, limit=4, **args)
        ids = [item["id"] for item in walked]
        assert len(ids) == len(set(ids)), args
        query = InvoiceQuery(status=args.get("status", "all"), q=args.get("q", ""))
        if "sort" in args:
            query = InvoiceQuery(query.status, query.q, sort=args["sort"])
        listed = page_ids(
            lambda n, q=query: invoices.list_invoices(
                session, InvoiceQuery(q.status, q.q, sort=q.sort, page=n), today
            )
        )
        assert ids == listed, args
    session.close()


def test_a_restricted_user_sees_only_the_accounts_granted(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck
) -> None:
    admin = walk(client, spec_check, LIST, bearer(), limit=100)
    pat = walk(client, spec_check, LIST, bearer("ap@acme.test"), limit=100)
    assert {i["billing_account"]["name"] for i in pat} == {"Acme West"}
    assert {i["billing_account"]["name"] for i in admin} == {"Acme West", "Acme East"}
    assert {i["id"] for i in pat} < {i["id"] for i in admin}


def test_an_item_has_the_lists_figures(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck
) -> None:
    items = walk(client, spec_check, LIST, bearer(), limit=100, q="INV-1005")
    [item] = items
    assert item["number"] == "INV-1005" and item["status"] == "partially_paid"
    assert item["overdue"] is True and item["display_status"] == "overdue"
    assert item["days_overdue"] > 0 and item["disputed"] is False
    total, paid, due = (item[k]["amount_minor"] for k in ("total", "amount_paid", "balance_due"))
    assert total - paid == due > 0
    assert item["balance_due"]["formatted"].startswith("$")


def test_filters_narrow_the_list_like_the_page(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck
) -> None:
    headers = bearer()
    overdue = walk(client, spec_check, LIST, headers, status="overdue")
    assert overdue and all(i["overdue"] for i in overdue)
    since = (clock.today() - timedelta(days=20)).isoformat()
    recent = walk(client, spec_check, LIST, headers, **{"from": since})
    assert recent and all(i["issue_date"] >= since for i in recent)
    none = walk(client, spec_check, LIST, headers, q="no such invoice anywhere")
    assert none == []


def _account_id(db: Session, name: str) -> str:
    with tenancy.system(db):
        return db.scalars(select(BillingAccount.public_id).where(BillingAccount.name == name)).one()


def test_the_account_filter_takes_only_an_account_in_scope(
    app: Flask, client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, db: Session
) -> None:
    east = _account_id(db, "Acme East")
    walked = walk(client, spec_check, LIST, bearer(), limit=3, account=east, sort="due")
    assert walked and {i["billing_account"]["id"] for i in walked} == {east}
    session = scoped_session(app, "admin@acme.test")
    listed = page_ids(
        lambda n: invoices.list_invoices(
            session, InvoiceQuery(account=east, sort="due", page=n), clock.today()
        )
    )
    session.close()
    assert [i["id"] for i in walked] == listed
    globex = _account_id(db, "Globex Berlin")
    for headers, account in ((bearer("ap@acme.test"), east), (bearer(), globex)):
        for path in (LIST, DOCS):
            response = client.get(f"{path}?account={account}", headers=headers)
            assert response.status_code == 400, (path, account)
            body = spec_check(response, path)
            assert body["errors"] == [
                {"field": "account", "message": "Choose one of your billing accounts."}
            ]


def test_the_details_queries_are_bounded(
    client: FlaskClient, bearer: Bearer, db: Session, count_queries: QueryCounter
) -> None:
    headers = bearer()
    url = f"/api/portal/invoices/{_public_id(db, 'INV-1003')}"
    assert _statements(client, count_queries, url, headers) <= 10, count_queries.statements


def test_the_detail_has_lines_payments_credits_and_signed_links(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, db: Session
) -> None:
    headers = bearer()
    public_id = _public_id(db, "INV-1005")
    body = spec_check(client.get(f"/api/portal/invoices/{public_id}", headers=headers), ONE)
    assert body["id"] == public_id and body["lines"]
    assert (
        sum(line["amount"]["amount_minor"] for line in body["lines"])
        == (body["subtotal"]["amount_minor"])
    )
    assert body["payments"] and body["payments"][0]["method"] == "Visa ending 4242"
    assert body["pdf_url"] == f"/api/portal/invoices/{public_id}/pdf"
    with tenancy.system(db):
        viewed = db.scalars(select(AuditEvent).where(AuditEvent.name == "Portal.InvoiceViewed"))
        assert [e.properties["invoice_id"] for e in viewed] == [public_id]

    credited = _public_id(db, "INV-1003")
    body = spec_check(client.get(f"/api/portal/invoices/{credited}", headers=headers), ONE)
    assert [c["number"] for c in body["credits"]] == ["CN-301"]
    links = [c["document_url"] for c in body["credits"]] + [
        d["download_url"] for d in body["documents"]
    ]
    assert links and all(u and u.startswith("/portal/download/") for u in links)
    # The link is the page's own: it downloads the file for this user.
    fetched = client.get(links[0], headers=headers)
    assert fetched.status_code in {200, 302}


def test_the_pdf_is_the_pages_pdf(
    client: FlaskClient, signed_in: Auth, bearer: Bearer, spec_check: SpecCheck, db: Session
) -> None:
    public_id = _public_id(db, "INV-1003")
    page = client.get(f"/portal/invoices/{public_id}/pdf")
    response = client.get(f"/api/portal/invoices/{public_id}/pdf", headers=bearer())
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.get_data() == page.get_data() and response.get_data().startswith(b"%PDF")
    assert response.headers["Content-Disposition"] == page.headers["Content-Disposition"]
    document = client.get("/api/openapi.json").get_json()
    ok = document["paths"][PDF]["get"]["responses"]["200"]["content"]
    assert ok == {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}


def test_a_foreign_invoice_is_404_like_a_missing_one(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, db: Session
) -> None:
    globex = _public_id(db, "RE-2026-001")
    east = _public_id(db, "INV-2001")  # Acme East: not granted to ap@
    cases = [
        (bearer(), globex),
        (bearer(), "inv_made-up"),
        (bearer("ap@acme.test"), east),
        (bearer("admin@globex.test"), _public_id(db, "INV-1001")),
    ]
    for headers, public_id in cases:
        for path in (ONE, PDF):
            response = client.get(path.format(public_id=public_id), headers=headers)
            assert response.status_code == 404, (path, public_id)
            body = spec_check(response, path)
            assert body["detail"] == "Invoice not found."
    assert client.get(ONE.format(public_id=east), headers=bearer()).status_code == 200


def test_no_credentials_is_401_everywhere(
    client: FlaskClient, spec_check: SpecCheck, db: Session
) -> None:
    public_id = _public_id(db, "INV-1001")
    for path in (LIST, ONE, PDF, DOCS, HISTORY):
        response = client.get(path.format(public_id=public_id))
        assert response.status_code == 401
        spec_check(response, path)


BAD_CURSORS = [
    ("-date", "x"),
    ("-date", "!!!"),
    ("-date", api.encode_cursor([])),
    ("-date", api.encode_cursor(["-date", "2026-01-01"])),
    ("-date", api.encode_cursor(["date", "2026-01-01", 5])),  # another sort's cursor
    ("-date", api.encode_cursor(["-date", "not a date", 5])),
    ("-date", api.encode_cursor(["-date", "2026-01-01", "5"])),
    ("-date", api.encode_cursor(["-date", "2026-01-01", True])),
    ("-date", api.encode_cursor(["-date", "2026-01-01", 2**70])),
    ("-amount", api.encode_cursor(["-amount", "100", 5])),
    ("-amount", api.encode_cursor(["-amount", 2**64, 5])),
    ("-status", api.encode_cursor(["-status", "nonsense", 5])),
    ("-number", api.encode_cursor(["-number", "a\x00b", 5])),
    ("-date", api.encode_cursor({"a": 1})),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("sort", "cursor"), BAD_CURSORS)
def test_a_tampered_invoice_cursor_is_a_400_problem(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, sort: str, cursor: str
) -> None:
    response = client.get(f"{LIST}?{urlencode({'after': cursor, 'sort': sort})}", headers=bearer())
    assert response.status_code == 400, cursor
    body = spec_check(response, LIST)
    assert body["errors"] == [{"field": "after", "message": "invalid"}]


@pytest.mark.parametrize("path", [DOCS, HISTORY])
@pytest.mark.parametrize(
    "cursor",
    [
        "x",
        api.encode_cursor(["2026-01-01T00:00:00", 5]),  # no offset
        api.encode_cursor(["0001-01-01T00:00:00+14:00", 5]),  # before year 1 in UTC
        api.encode_cursor(["yesterday", 5]),
        api.encode_cursor(["2026-01-01T00:00:00+00:00", -(2**63) - 1]),
        api.encode_cursor([5, "2026-01-01T00:00:00+00:00"]),
    ],
)
def test_a_tampered_cursor_elsewhere_is_a_400_problem(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, path: str, cursor: str
) -> None:
    response = client.get(f"{path}?{urlencode({'after': cursor})}", headers=bearer())
    assert response.status_code == 400, cursor
    assert spec_check(response, path)["errors"] == [{"field": "after", "message": "invalid"}]


@pytest.mark.parametrize(
    ("path", "args", "field"),
    [
        (LIST, {"status": "bogus"}, "status"),
        (LIST, {"sort": "price"}, "sort"),
        (LIST, {"limit": "0"}, "limit"),
        (LIST, {"limit": "101"}, "limit"),
        (LIST, {"limit": "9" * 400}, "limit"),
        (LIST, {"from": "2026-02-30"}, "from"),
        (LIST, {"to": "2100-01-01"}, "to"),
        (LIST, {"from": "2026-05-02", "to": "2026-05-01"}, "to"),
        (LIST, {"q": "x" * 101}, "q"),
        (DOCS, {"type": "invoice"}, "type"),
        (DOCS, {"account": "acct_nope"}, "account"),
        (DOCS, {"from": "1999-12-31"}, "from"),
        (HISTORY, {"status": "pending"}, "status"),
        (HISTORY, {"to": "31/12/2026"}, "to"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(
    client: FlaskClient,
    bearer: Bearer,
    spec_check: SpecCheck,
    path: str,
    args: dict[str, str],
    field: str,
) -> None:
    response = client.get(f"{path}?{urlencode(args)}", headers=bearer())
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = spec_check(response, path)
    assert field in {e["field"] for e in body["errors"]}


PARAMS = ["status", "q", "from", "to", "sort", "limit", "after", "type", "account", "page"]
VALUES = st.one_of(
    st.sampled_from(ODD + NUMBER_SPELLINGS + DATE_SPELLINGS),
    st.sampled_from(["all", "overdue", "-amount", "number", "succeeded", "contract", "25"]),
    st.text(max_size=30),
)
QUERIES = st.lists(st.tuples(st.sampled_from(PARAMS), VALUES), max_size=5)


@FUZZ
@given(query=QUERIES, path=st.sampled_from([LIST, DOCS, HISTORY]))
def test_any_query_string_is_an_answer_or_a_400_never_a_500(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, query: Any, path: str
) -> None:
    response = client.get(f"{path}?{urlencode(query)}", headers=bearer())
    assert response.status_code in {200, 400}, (query, response.get_data(as_text=True))
    spec_check(response, path)


# documents and Payment History --------------------------------------------------------------


def test_document_pages_hold_every_row_once_as_the_library_does(
    app: Flask,
    client: FlaskClient,
    bearer: Bearer,
    spec_check: SpecCheck,
    db: Session,
    backend: Backend,
) -> None:
    acme = company_named(db, "Acme Corp")
    west = account_named(db, "Acme West")
    for n in range(9):  # several in the same instant: the id breaks the tie
        make_document(db, acme, backend.storage, f"Note {n}", account=west if n % 2 else None)
    for email in ("admin@acme.test", "ap@acme.test"):
        session = scoped_session(app, email)
        for args in ({}, {"type": "tax_form"}, {"q": "note"}):
            walked = walk(client, spec_check, DOCS, bearer(email), limit=4, **args)
            ids = [d["id"] for d in walked]
            listed = page_ids(
                lambda n, a=args, s=session: documents.list_documents(
                    s, DocumentQuery(kind=a.get("type", "all"), q=a.get("q", ""), page=n)
                )
            )
            assert ids == listed and len(set(ids)) == len(ids), (email, args)
            assert all(d["download_url"].startswith("/portal/download/") for d in walked)
        session.close()
    with tenancy.system(db):
        west_id = db.scalars(
            select(BillingAccount.public_id).where(BillingAccount.name == "Acme West")
        ).one()
    only_west = walk(client, spec_check, DOCS, bearer(), account=west_id)
    assert only_west and {d["billing_account"] for d in only_west} == {"Acme West"}


def test_documents_are_503_while_the_library_is_off(
    client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, db: Session
) -> None:
    with tenancy.system(db):
        db.merge(FeatureFlag(name="m25_portal_documents", enabled=False))
        db.flush()
    response = client.get(DOCS, headers=bearer())
    assert response.status_code == 503
    assert response.get_json()["detail"] == "Documents aren't available right now."
    spec_check(response, DOCS)


def test_payment_pages_hold_every_row_once_as_the_history_does(
    app: Flask, client: FlaskClient, bearer: Bearer, spec_check: SpecCheck, db: Session
) -> None:
    west = account_named(db, "Acme West")
    invoice = make_invoice(db, west, "900.00")
    when = clock.now() - timedelta(hours=3)
    for _ in range(5):  # the same instant: the id breaks the tie
        make_payment(db, invoice, "10.00", when=when)
    for email in ("admin@acme.test", "ap@acme.test"):
        session = scoped_session(app, email)
        for args in ({}, {"status": "succeeded"}):
            walked = walk(client, spec_check, HISTORY, bearer(email), limit=3, **args)
            ids = [p["id"] for p in walked]
            listed = page_ids(
                lambda n, a=args, s=session: payment_history.list_payments(
                    s, HistoryQuery(status=a.get("status", ""), page=n)
                )
            )
            assert ids == listed and len(set(ids)) == len(ids), (email, args)
        session.close()
    mine = walk(client, spec_check, HISTORY, bearer(), limit=100)
    paid = [p for p in mine if any(i["id"] == invoice.public_id for i in p["invoices"])]
    assert len(paid) == 5 and all(p["amount"]["amount_minor"] == 1000 for p in paid)


# queries per page -------------------------------------------------------------------------


def _statements(client: FlaskClient, counter: QueryCounter, url: str, headers: Any) -> int:
    client.get(url, headers=headers)  # warm: the token's first use
    counter.statements.clear()
    response = client.get(url, headers=headers)
    assert response.status_code == 200
    return counter.count


def test_a_pages_queries_are_bounded_and_do_not_grow_with_history(
    client: FlaskClient,
    bearer: Bearer,
    db: Session,
    backend: Backend,
    count_queries: QueryCounter,
) -> None:
    headers = bearer()
    first = walk_cursor(client, headers)
    urls = [
        f"{LIST}?limit=10",
        f"{LIST}?limit=10&after={first}",
        f"{LIST}?limit=10&q=services&sort=amount",
        f"{DOCS}?limit=10",
        f"{HISTORY}?limit=10",
    ]
    before = {url: _statements(client, count_queries, url, headers) for url in urls}
    assert all(n <= 6 for n in before.values()), before
    acme = company_named(db, "Acme Corp")
    west = account_named(db, "Acme West")
    for n in range(40):
        invoice = make_invoice(db, west, "75.00", issued=-(n % 60) - 1)
        make_payment(db, invoice, "5.00")
        make_document(db, acme, backend.storage, f"Extra {n}", account=west, invoice=invoice)
    after = {url: _statements(client, count_queries, url, headers) for url in urls}
    assert after == before


def walk_cursor(client: FlaskClient, headers: dict[str, str]) -> str:
    body = client.get(f"{LIST}?limit=10", headers=headers).get_json()
    cursor: str = body["page"]["next_cursor"]
    assert cursor
    return cursor
