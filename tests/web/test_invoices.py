"""The invoice list, detail, PDF and ZIP against the seeded data."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from portal import tenancy
from portal.models import AuditEvent, Company, Invoice, PaymentStatus, Role
from tests.conftest import Auth, Backend, QueryCounter, readable
from tests.factories import (
    make_company,
    make_invoice,
    make_payment,
    make_payment_method,
    make_user,
)


def numbers(page: str) -> list[str]:
    return re.findall(r'class="row-link" href="/portal/invoices/inv_[\w-]+">([\w-]+)</a>', page)


def acme(db: Session) -> list[Invoice]:
    with tenancy.system(db):
        return list(
            db.scalars(
                select(Invoice)
                .where(Invoice.number.like("INV-%"))
                .options(selectinload(Invoice.lines))
            )
        )


def get(client: FlaskClient, query: str = "", **headers: str) -> str:
    response = client.get(f"/portal/invoices{query}", headers=headers)
    assert response.status_code == 200
    return response.get_data(as_text=True)


@pytest.mark.parametrize(
    "status", ["open", "overdue", "partially_paid", "processing", "failed", "disputed", "paid"]
)
def test_each_status_filter(
    client: FlaskClient, signed_in: Auth, db: Session, backend: Backend, status: str
) -> None:
    shown = {"failed": "payment_failed"}.get(status, status)
    expected = sorted(i.number for i in acme(db) if i.display_status(backend.today) == shown)
    assert expected
    assert sorted(numbers(get(client, f"?status={status}"))) == expected


def test_all_is_paged_25_at_a_time(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    total = len(acme(db))
    first = numbers(get(client, "?sort=number"))
    assert len(first) == min(25, total) and first == sorted(first)
    assert f"{total} invoices" in get(client)


def test_paging(
    client: FlaskClient, signed_in: Auth, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("portal.services.invoices.PAGE_SIZE", 5)
    everything = sorted(i.number for i in acme(db))
    seen = [n for p in range(1, 6) for n in numbers(get(client, f"?sort=number&page={p}"))]
    assert seen == everything
    page2 = get(client, "?sort=number&page=2")
    assert 'aria-current="page" href="/portal/invoices?sort=number&amp;page=2"' in page2
    assert numbers(get(client, "?sort=number&page=999")) == everything[20:]


@pytest.mark.parametrize(
    ("sort", "key", "reverse"),
    [
        ("date", lambda i: (i.issue_date, i.id), False),
        ("-date", lambda i: (i.issue_date, i.id), True),
        ("due", lambda i: (i.due_date, i.id), False),
        ("-due", lambda i: (i.due_date, i.id), True),
        ("amount", lambda i: (i.total, i.id), False),
        ("-amount", lambda i: (i.total, i.id), True),
        ("status", lambda i: (i.status.value, i.id), False),
        ("-status", lambda i: (i.status.value, i.id), True),
    ],
)
def test_sorts(
    client: FlaskClient,
    signed_in: Auth,
    db: Session,
    sort: str,
    key,
    reverse: bool,  # type: ignore[no-untyped-def]
) -> None:
    expected = [i.number for i in sorted(acme(db), key=key, reverse=reverse)][:25]
    assert numbers(get(client, f"?sort={sort}")) == expected


@pytest.mark.parametrize(
    ("q", "expected"),
    [("INV-1012", ["INV-1012"]), ("po-7012", ["INV-1012"]), ("inv-201", None)],
)
def test_search_by_number_and_reference(
    client: FlaskClient, signed_in: Auth, db: Session, q: str, expected: list[str] | None
) -> None:
    found = sorted(numbers(get(client, f"?q={q}")))
    if expected is None:
        expected = sorted(i.number for i in acme(db) if i.number.lower().startswith("inv-201"))
    assert found == expected


def test_search_by_line_description(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    expected = sorted(
        i.number for i in acme(db) if any("backup" in line.description.lower() for line in i.lines)
    )
    assert expected and sorted(numbers(get(client, "?q=Backup"))) == expected


def test_search_treats_wildcards_literally(client: FlaskClient, signed_in: Auth) -> None:
    assert numbers(get(client, "?q=%25")) == []
    assert "No invoices match these filters" in get(client, "?q=%25")


def test_date_range(client: FlaskClient, signed_in: Auth, db: Session, backend: Backend) -> None:
    start = backend.today.replace(day=1) if backend.today.day > 1 else backend.today
    expected = sorted(i.number for i in acme(db) if i.issue_date >= start)
    assert sorted(numbers(get(client, f"?from={start.isoformat()}"))) == expected


def test_bad_dates_are_explained_and_the_rest_still_applies(
    client: FlaskClient, signed_in: Auth
) -> None:
    page = get(client, "?status=paid&from=2026-13-45&q=INV")
    assert "Not a valid date value." in page
    assert 'value="INV"' in page  # nothing typed is lost
    assert set(numbers(page)) and all(n.startswith("INV-") for n in numbers(page))
    reversed_range = get(client, "?from=2026-05-01&to=2026-04-01")
    assert "The end date must be on or after the start date." in reversed_range


def test_htmx_gets_the_fragment_and_responses_vary(client: FlaskClient, signed_in: Auth) -> None:
    full = client.get("/portal/invoices?status=paid")
    fragment = client.get(
        "/portal/invoices?status=paid",
        headers={"HX-Request": "true", "HX-Target": "invoice-results"},
    )
    assert "<html" in full.get_data(as_text=True)
    body = fragment.get_data(as_text=True)
    assert "<html" not in body and "<table" in body
    assert 'data-hx-swap-oob="innerHTML:#result-count"' in body
    assert numbers(body) == numbers(full.get_data(as_text=True))
    for response in (full, fragment):
        assert {"HX-Request", "HX-Target"} <= set(response.vary)


def test_history_restore_and_boosted_requests_get_the_whole_page(
    client: FlaskClient, signed_in: Auth
) -> None:
    """Back to a filtered list: htmx asks again with HX-Request (it keeps no snapshots) and
    swaps the answer in for the whole body, so a fragment would leave a bare table."""
    for extra in ({"HX-History-Restore-Request": "true"}, {"HX-Boosted": "true"}):
        response = client.get("/portal/invoices?q=INV", headers={"HX-Request": "true", **extra})
        body = response.get_data(as_text=True)
        assert "<html" in body and 'class="site-nav"' in body and "<h1>Invoices</h1>" in body
        assert "data-hx-swap-oob" not in body  # the count is in its place, not swapped in
        assert "HX-Request" in response.headers["Vary"]


def test_the_list_is_a_real_get_form(client: FlaskClient, signed_in: Auth) -> None:
    page = get(client)
    assert '<form class="card filters" method="get" action="/portal/invoices"' in page
    assert 'data-hx-push-url="true"' in page
    for name in ('name="status"', 'name="q"', 'name="from"', 'name="to"', 'name="sort"'):
        assert name in page


def test_restricted_user_sees_only_their_accounts_invoices(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in("ap@acme.test")
    found = numbers(get(client, "?sort=number"))
    assert found and all(n.startswith("INV-1") for n in found)


def test_empty_state(client: FlaskClient, auth: Auth) -> None:
    auth.sign_in("admin@initech.test")
    page = get(client)
    assert "No open invoices" in page and "You're all caught up! No outstanding invoices." in page
    assert 'href="/portal/invoices?status=paid"' in page  # "View Paid"


def test_list_query_count_does_not_grow_with_invoices(
    client: FlaskClient, signed_in: Auth, count_queries: QueryCounter
) -> None:
    get(client, "?status=paid")
    count_queries.statements.clear()
    get(client)
    assert count_queries.count <= 6, count_queries.statements


def _public_id(db: Session, number: str) -> str:
    with tenancy.system(db):
        return db.scalars(select(Invoice.public_id).where(Invoice.number == number)).one()


@pytest.fixture
def vandelay(db: Session) -> Company:
    """A company of its own: two accounts, an admin (art@) and a user granted Imports only
    (kel@), a saved card."""
    company = make_company(db, "Vandelay Industries", accounts=("Imports", "Exports"))
    imports, _exports = company.billing_accounts
    art = make_user(db, company, "art@vandelay.test")
    make_user(db, company, "kel@vandelay.test", role=Role.CUSTOMER, accounts=[imports])
    make_payment_method(db, company, user=art, default=True)
    return company


def _in_state(db: Session, company: Company, state: str) -> Invoice:
    imports = company.billing_accounts[0]
    if state == "due":
        return make_invoice(db, imports, "120.00", due=10)
    if state == "overdue":
        return make_invoice(db, imports, "120.00", due=-12)
    inv = make_invoice(db, imports, "120.00", due=5)
    status = {
        "paid": PaymentStatus.SUCCEEDED,
        "processing": PaymentStatus.PROCESSING,
        "failed": PaymentStatus.FAILED,
    }[state]
    make_payment(db, inv, status=status)
    return inv


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("due", "Payment due by"),
        ("overdue", "12 days overdue"),
        ("paid", "Paid on"),
        ("processing", "Your payment is being processed"),
        ("failed", "Payment failed: Your card was declined."),
    ],
)
def test_detail_states(
    client: FlaskClient, auth: Auth, db: Session, vandelay: Company, state: str, message: str
) -> None:
    inv = _in_state(db, vandelay, state)
    auth.sign_in("art@vandelay.test")
    response = client.get(f"/portal/invoices/{inv.public_id}")
    page = readable(response.get_data(as_text=True))
    assert response.status_code == 200 and f"Invoice {inv.number}" in page and message in page


def test_a_user_granted_one_account_sees_only_its_invoices(
    client: FlaskClient, auth: Auth, db: Session, vandelay: Company
) -> None:
    imports, exports = vandelay.billing_accounts
    mine = make_invoice(db, imports, "120.00", due=-3)
    theirs = make_invoice(db, exports, "80.00", due=-3)
    auth.sign_in("kel@vandelay.test")
    assert numbers(get(client, "?status=all")) == [mine.number]
    assert client.get(f"/portal/invoices/{theirs.public_id}").status_code == 404
    auth.logout()
    auth.sign_in("art@vandelay.test")
    assert sorted(numbers(get(client, "?status=all"))) == sorted([mine.number, theirs.number])


def test_detail_shows_lines_totals_and_payments(
    client: FlaskClient, signed_in: Auth, db: Session, count_queries: QueryCounter
) -> None:
    public_id = _public_id(db, "INV-1005")
    count_queries.statements.clear()
    page = client.get(f"/portal/invoices/{public_id}").get_data(as_text=True)
    assert count_queries.count <= 10, count_queries.statements
    with tenancy.system(db):
        invoice = db.scalars(select(Invoice).where(Invoice.public_id == public_id)).one()
        for line in invoice.lines:
            assert line.description in page
    assert re.search(r'data-figure="balance-due"><bdi dir="ltr">\$[\d,]+\.\d\d</bdi>', page)
    assert "Payments applied" in page and "Visa •••• 4242" in page
    with tenancy.system(db):
        viewed = db.scalars(select(AuditEvent).where(AuditEvent.name == "Portal.InvoiceViewed"))
        assert [e.properties["invoice_id"] for e in viewed] == [public_id]


def test_foreign_invoice_is_not_found_everywhere(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    foreign = _public_id(db, "RE-2026-001")
    own = _public_id(db, "INV-1003")
    for path in (
        f"/portal/invoices/{foreign}",
        f"/portal/invoices/{foreign}/pdf",
        f"/portal/invoices/download?invoice={own}&invoice={foreign}",
        "/portal/invoices/inv_doesnotexist",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Invoice not found." in response.get_data(as_text=True)


def test_restricted_user_cannot_open_another_accounts_invoice(
    client: FlaskClient, auth: Auth, db: Session
) -> None:
    auth.sign_in("ap@acme.test")
    assert client.get(f"/portal/invoices/{_public_id(db, 'INV-2002')}").status_code == 404


def test_pdf_download(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    response = client.get(f"/portal/invoices/{_public_id(db, 'INV-1003')}/pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF")
    assert "filename=invoice-INV-1003.pdf" in response.headers["Content-Disposition"]


def test_zip_of_selected_invoices(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    ids = [_public_id(db, n) for n in ("INV-1003", "INV-2002")]
    response = client.get(f"/portal/invoices/download?invoice={ids[0]}&invoice={ids[1]}")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        assert sorted(archive.namelist()) == ["invoice-INV-1003.pdf", "invoice-INV-2002.pdf"]
        assert all(archive.read(n).startswith(b"%PDF") for n in archive.namelist())


def test_download_with_nothing_selected_says_so(client: FlaskClient, signed_in: Auth) -> None:
    response = client.get("/portal/invoices/download")
    assert response.headers["Location"] == "/portal/invoices"
    assert "Select at least one invoice to download." in get(client)


def test_htmx_error_is_a_fragment_with_retry(client: FlaskClient, signed_in: Auth) -> None:
    response = client.get("/portal/invoices/inv_missing", headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert response.status_code == 404 and "<html" not in body
    assert 'role="alert"' in body and "Invoice not found." in body and ">Retry</a>" in body


def test_filters_that_hide_everything_say_so_instead_of_all_caught_up(
    client: FlaskClient, auth: Auth
) -> None:
    auth.sign_in("admin@globex.test")
    page = get(client, "?status=processing")
    assert "No invoices match these filters" in page and "all caught up" not in page


def test_pagination_links_carry_only_the_filters(
    client: FlaskClient, signed_in: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("portal.services.invoices.PAGE_SIZE", 5)
    page = get(client, "?status=all&endpoint=x&sort=number")
    nav = page[page.index('<nav class="pagination"') :]
    nav = nav[: nav.index("</nav>")]
    assert "/portal/invoices?status=all&amp;sort=number&amp;page=2" in nav
    assert "endpoint=" not in nav


def test_zip_names_never_collide(client: FlaskClient, signed_in: Auth, db: Session) -> None:
    with tenancy.system(db):
        original = db.scalars(select(Invoice).where(Invoice.number == "INV-1003")).one()
        twin = Invoice(
            company_id=original.company_id,
            billing_account_id=original.billing_account_id,
            number="INV/1003",
            issue_date=original.issue_date,
            due_date=original.due_date,
            currency="USD",
            subtotal=100,
            tax_total=0,
            total=100,
        )
        db.add(twin)
        db.flush()
        ids = (original.public_id, twin.public_id)
    response = client.get(f"/portal/invoices/download?invoice={ids[0]}&invoice={ids[1]}")
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        names = archive.namelist()
    assert len(names) == len(set(names)) == 2


# credit notes and documents on the invoice --------------------------------------------------


def _credited(db: Session) -> Invoice:
    with tenancy.system(db):
        return db.scalars(select(Invoice).where(Invoice.number == "INV-1003")).one()


def test_a_credit_note_lowers_the_balance_and_shows_beside_the_payments(
    client: FlaskClient, signed_in: Auth, db: Session, count_queries: QueryCounter
) -> None:
    invoice = _credited(db)
    assert invoice.amount_credited == 12_000
    assert invoice.balance_due == invoice.total - invoice.amount_paid
    assert invoice.balance_due == invoice.total - 12_000 - invoice.paid_by_payments
    count_queries.statements.clear()
    response = client.get(f"/portal/invoices/{invoice.public_id}")
    # the session, the flags, the invoice and its lines, payments, documents, credit notes with
    # their documents, disputes, the audit record, the header's unread notifications, and
    # whether autopay will charge it (its account's setting): 11
    assert count_queries.count <= 11, count_queries.statements
    page = readable(response.get_data(as_text=True))
    assert "Credits applied" in page and "CN-301" in page
    assert 'data-figure="credits-applied">$120.00<' in page
    assert f'data-figure="amount-paid">{money(invoice.paid_by_payments)}<' in page
    assert f'data-figure="balance-due">{money(invoice.balance_due)}<' in page
    # The credit note's number opens its document through a signed link made for this user.
    raw = response.get_data(as_text=True)
    credits = raw.split('<span class="credit-notes">', 1)[1].split("</dt>", 1)[0]
    assert re.search(r'<a href="/portal/download/[^"]+"><bdi>CN-301</bdi>', credits), credits


def test_the_invoices_documents_download_through_signed_links(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    import hashlib

    from portal.models import Document

    invoice = _credited(db)
    page = client.get(f"/portal/invoices/{invoice.public_id}").get_data(as_text=True)
    section = page.split('id="docs-title"', 1)[1]
    assert "Credit note CN-301" in section and 'class="muted">(' in section
    link = re.search(r'href="(/portal/download/[^"]+)">Download', section)
    assert link, section
    with client.get(link.group(1)) as response:
        body = response.get_data()
    with tenancy.system(db):
        paper = db.scalars(select(Document).where(Document.invoice_id == invoice.id)).one()
    assert hashlib.sha256(body).hexdigest() == paper.sha256


def test_the_pdf_shows_payments_and_credits_apart(
    client: FlaskClient, signed_in: Auth, db: Session
) -> None:
    from tests.unit.test_invoice_pdf import pdf_text

    invoice = _credited(db)
    text = pdf_text(client.get(f"/portal/invoices/{invoice.public_id}/pdf").data)
    assert "Credits applied" in text and "CN-301" in text and "$120.00" in text
    assert money(invoice.paid_by_payments) in text and money(invoice.balance_due) in text
    plain = pdf_text(client.get(f"/portal/invoices/{_public_id(db, 'INV-1005')}/pdf").data)
    assert "Amount paid" in plain and "Credits applied" not in plain
    ids = f"invoice={invoice.public_id}&invoice={_public_id(db, 'INV-1005')}"
    with zipfile.ZipFile(io.BytesIO(client.get(f"/portal/invoices/download?{ids}").data)) as zf:
        assert "CN-301" in pdf_text(zf.read("invoice-INV-1003.pdf"))
        assert "Credits applied" not in pdf_text(zf.read("invoice-INV-1005.pdf"))


def money(minor: int) -> str:
    return f"${minor // 100:,}.{minor % 100:02d}"
