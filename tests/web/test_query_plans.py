"""The list, its count and the dashboard's aggregates reach a customer's invoices through an
index on the invoices' company or billing account, never by scanning every company's invoices.
(The search goes through its text index: tests/web/test_invoice_search.py.)

Each page is requested through the app with thousands of invoices in two companies; the SQL it
ran on `invoices` is then explained with the same parameters, in the same transaction:
SQLite's `EXPLAIN QUERY PLAN` (after ANALYZE, so the planner weighs real statistics) and
PostgreSQL's `EXPLAIN (FORMAT JSON)`. On PostgreSQL the tables are small enough that a
sequential scan can still be cheapest, so the test turns sequential scans off
(`SET LOCAL enable_seqscan = off`): it checks an index on company or account is *usable* for
every one of these statements, which is what keeps them off the other companies' rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, insert, select

from portal.models import BillingAccount, Invoice, InvoiceLine
from tests.conftest import Auth

ROWS = 1300  # invoices for each of the two companies (past the count bound, 1,000)
ON_INVOICES = re.compile(r"\b(FROM|JOIN)\s+invoices\b", re.IGNORECASE)


def _fill(connection: Connection) -> None:
    """ROWS invoices (two lines each) for Acme West and as many for Globex Berlin."""
    today = date.today()
    now = datetime.now(UTC)
    for name, prefix in (("Acme West", "PLA"), ("Globex Berlin", "PLG")):
        account = connection.execute(
            select(BillingAccount.id, BillingAccount.company_id).where(BillingAccount.name == name)
        ).one()
        rows = []
        for n in range(ROWS):
            issued = today - timedelta(days=n % 700)
            total = 10_000 + (n * 7919) % 900_000
            rows.append(
                {
                    "public_id": f"inv_{prefix.lower()}{n:06d}",
                    "company_id": account.company_id,
                    "billing_account_id": account.id,
                    "number": f"{prefix}-{n:06d}",
                    "reference": f"PO-{n % 500}",
                    "issue_date": issued,
                    "due_date": issued + timedelta(days=30),
                    "currency": "USD",
                    "subtotal": total,
                    "tax_total": 0,
                    "total": total,
                    "amount_paid": total if n % 3 == 0 else 0,
                    "status": "paid" if n % 3 == 0 else "open",
                    "notes": "",
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        connection.execute(insert(Invoice), rows)
        ids = connection.execute(
            select(Invoice.id).where(Invoice.number.like(f"{prefix}-%"))
        ).scalars()
        connection.execute(
            insert(InvoiceLine),
            [
                {
                    "company_id": account.company_id,
                    "billing_account_id": account.id,
                    "invoice_id": invoice_id,
                    "position": position,
                    "description": f"Managed hosting {invoice_id}-{position}",
                    "quantity": 1,
                    "unit_price": 5_000,
                    "tax_rate_bp": 0,
                    "amount": 5_000,
                }
                for invoice_id in ids
                for position in (1, 2)
            ],
        )
    connection.exec_driver_sql("ANALYZE")
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")


class Recorder:
    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if ON_INVOICES.search(statement) and statement.lstrip().upper().startswith("SELECT"):
            self.statements.append((statement, parameters))


@pytest.fixture
def recorded(connection: Connection) -> Iterator[Recorder]:
    _fill(connection)
    recorder = Recorder()
    event.listen(connection, "before_cursor_execute", recorder)
    try:
        yield recorder
    finally:
        event.remove(connection, "before_cursor_execute", recorder)


def _sqlite_accesses(connection: Connection, statement: str, parameters: Any) -> list[str]:
    """How each step of the plan reaches `invoices`: "SEARCH invoices USING INDEX …"."""
    plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return [row[3] for row in plan if re.match(r"(SCAN|SEARCH) invoices\b", row[3])]


def _postgres_accesses(connection: Connection, statement: str, parameters: Any) -> list[str]:
    """Each plan node on `invoices`, as "<node type> <index> <index condition>"."""
    (document,) = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).one()
    if isinstance(document, str):
        document = json.loads(document)
    found: list[str] = []

    def walk(node: dict[str, Any], heap: str | None = None) -> None:
        kind = node["Node Type"]
        # A Bitmap Heap Scan names the table; the Bitmap Index Scans under it say how.
        on_invoices = node.get("Relation Name") == "invoices" and kind != "Bitmap Heap Scan"
        if on_invoices or (kind == "Bitmap Index Scan" and heap == "invoices"):
            index = f"{node.get('Index Name', '')} {node.get('Index Cond', '')}"
            found.append(f"{kind} {index}")
        below = {"Bitmap Heap Scan": node.get("Relation Name"), "BitmapAnd": heap, "BitmapOr": heap}
        for child in node.get("Plans", []):
            walk(child, below.get(kind))

    walk(document[0]["Plan"])
    return found


def _accesses(connection: Connection, statement: str, parameters: Any) -> list[str]:
    if connection.dialect.name == "postgresql":
        return _postgres_accesses(connection, statement, parameters)
    return _sqlite_accesses(connection, statement, parameters)


# An access to invoices that is a seek on an index led by company_id or billing_account_id.
SQLITE_SEEK = re.compile(
    r"SEARCH invoices USING (COVERING )?INDEX ix_invoices_\w+ \((company_id|billing_account_id)="
)
POSTGRES_SEEK = re.compile(
    r"(Index Scan|Index Only Scan|Bitmap Index Scan) ix_invoices_\w+ "
    r"\(+(invoices\.)?(company_id|billing_account_id) (=|= ANY)"
)

PAGES = {
    "list": "/portal/invoices",
    "list fragment, paid": "/portal/invoices?status=paid",
    "list, overdue, by amount": "/portal/invoices?status=overdue&sort=-amount",
    "dashboard": "/portal/dashboard",
}


@pytest.mark.parametrize("signed_in", ["admin@acme.test", "ap@acme.test"], indirect=True)
@pytest.mark.parametrize("page", PAGES)
def test_pages_reach_invoices_by_company_or_account_index(
    connection: Connection, recorded: Recorder, signed_in: Auth, page: str
) -> None:
    headers = {"HX-Request": "true", "HX-Target": "invoice-results"} if "fragment" in page else {}
    recorded.statements.clear()
    response = signed_in.client.get(PAGES[page], headers=headers)
    assert response.status_code == 200
    assert recorded.statements, "no statement on invoices recorded"
    seek = POSTGRES_SEEK if connection.dialect.name == "postgresql" else SQLITE_SEEK
    for statement, parameters in recorded.statements:
        accesses = _accesses(connection, statement, parameters)
        assert accesses, f"invoices not in the plan of {statement}"
        for access in accesses:
            assert seek.match(access), f"{access}\nin the plan of\n{statement}"


def test_a_scan_of_every_company_fails_the_check(
    connection: Connection, recorded: Recorder
) -> None:
    """The check can fail: a query with no company or account condition scans them all."""
    statement = "SELECT count(*) FROM invoices WHERE total > 0"
    if connection.dialect.name == "postgresql":
        accesses = _postgres_accesses(connection, statement, {})
        assert accesses and not POSTGRES_SEEK.match(accesses[0]), accesses
    else:
        accesses = _sqlite_accesses(connection, statement, ())
        assert accesses and not SQLITE_SEEK.match(accesses[0]), accesses
