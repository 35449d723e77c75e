"""Pages whose cost does not grow with the customer's history.

With thousands of invoices per company (the query-plan tests' data): the dashboard and the
invoice list narrowed by status at most read pages of invoices (every statement on `invoices`
has a LIMIT; none aggregates them); their figures come from `invoice_tallies`, reached by an
index; a search or date range is counted up to a bound; the last page is read from the far end.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pytest
from sqlalchemy import Connection, event
from sqlalchemy.orm import Session

from portal.services import invoices, paging, payment_history
from portal.services.invoices import PAGE_SIZE, InvoiceQuery
from portal.services.paging import COUNT_BOUND
from tests.conftest import Auth, readable, scoped_session
from tests.web.test_query_plans import ROWS, Recorder, recorded

__all__ = ["recorded"]  # a fixture of this module too

AGGREGATE = re.compile(r"\b(count|sum|min|max)\s*\(", re.IGNORECASE)
ON_TALLIES = re.compile(r"\bFROM\s+invoice_tallies\b", re.IGNORECASE)

FIGURES = {
    "dashboard": "/portal/dashboard",
    "list": "/portal/invoices",
    "list, overdue": "/portal/invoices?status=overdue&sort=-amount",
    "list, paid, fragment": "/portal/invoices?status=paid",
    "list, open, last page": "/portal/invoices?status=open&page=9999",
}


class TallyRecorder(Recorder):
    def __call__(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if ON_TALLIES.search(statement):
            self.statements.append((statement, parameters))


@pytest.mark.parametrize("signed_in", ["admin@acme.test", "ap@acme.test"], indirect=True)
@pytest.mark.parametrize("page", FIGURES)
def test_figures_come_from_the_tallies_and_invoices_are_only_paged(
    connection: Connection, recorded: Recorder, signed_in: Auth, page: str
) -> None:
    on_tallies = TallyRecorder()
    event.listen(connection, "before_cursor_execute", on_tallies)
    try:
        headers = (
            {"HX-Request": "true", "HX-Target": "invoice-results"} if "fragment" in page else {}
        )
        recorded.statements.clear()
        response = signed_in.client.get(FIGURES[page], headers=headers)
    finally:
        event.remove(connection, "before_cursor_execute", on_tallies)
    assert response.status_code == 200
    assert on_tallies.statements, "no figure read from the tallies"
    for statement, _parameters in recorded.statements:
        assert not AGGREGATE.search(statement), statement
        assert re.search(r"\bLIMIT\b", statement, re.IGNORECASE), statement
    for statement, parameters in on_tallies.statements:
        plan = _tally_plan(connection, statement, parameters)
        assert plan and all(_uses_index(step) for step in plan), f"{plan}\n{statement}"


def _tally_plan(connection: Connection, statement: str, parameters: Any) -> list[str]:
    if connection.dialect.name == "postgresql":
        rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars().all()
        return [r for r in rows if "invoice_tallies" in r]
    rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return [row[3] for row in rows if "invoice_tallies" in row[3]]


def _uses_index(step: str) -> bool:
    return bool(
        re.search(r"SEARCH invoice_tallies USING (COVERING )?(INDEX|PRIMARY KEY)", step)
        or re.search(r"Index (Only )?Scan (using|on) \w*invoice_tallies", step)
        or re.search(r"Bitmap Heap Scan on invoice_tallies", step)
    )


def test_a_scan_of_the_tallies_fails_the_check() -> None:
    assert not _uses_index("SCAN invoice_tallies")
    assert not _uses_index("Seq Scan on invoice_tallies")


def test_the_last_page_is_read_from_the_far_end(
    connection: Connection, recorded: Recorder, signed_in: Auth
) -> None:
    recorded.statements.clear()
    response = signed_in.client.get("/portal/invoices?page=9999")
    assert response.status_code == 200
    ((page_query, parameters),) = [(s, p) for s, p in recorded.statements if "ORDER BY" in s]
    assert "ASC" in page_query  # newest first, read oldest first
    named = re.search(r"OFFSET %\((\w+)\)s", page_query)
    offset = parameters[named.group(1)] if named else parameters[-1]
    assert offset == 0, page_query


@pytest.mark.parametrize("sort", ["-date", "date", "-amount", "status", "-number", "due"])
def test_every_page_read_from_either_end_is_the_same_slice(
    app: Any, connection: Connection, recorded: Recorder, sort: str
) -> None:
    session: Session = scoped_session(app, "ap@acme.test")
    try:
        today = date.today()
        query = InvoiceQuery(status="open", sort=sort, page=1)
        first = invoices.list_invoices(session, query, today)
        everything = invoices.list_invoices(
            session, InvoiceQuery(status="open", sort=sort, page=1), today
        )
        ordered = [
            i.id
            for i in session.scalars(
                invoices._filtered(query, today).order_by(*invoices._ordering(sort))
            )
        ]
        assert first.total == len(ordered) == everything.total
        for number in (1, 2, first.pages // 2, first.pages // 2 + 1, first.pages - 1, first.pages):
            page = invoices.list_invoices(
                session, InvoiceQuery("open", sort=sort, page=number), today
            )
            start = (number - 1) * PAGE_SIZE
            assert [i.id for i in page.items] == ordered[start : start + PAGE_SIZE], number
    finally:
        session.close()


def test_a_search_is_counted_up_to_a_bound(
    connection: Connection, recorded: Recorder, signed_in: Auth
) -> None:
    response = signed_in.client.get("/portal/invoices?q=hosting")
    text = readable(response.get_data(as_text=True))
    assert f"more than {COUNT_BOUND:,} invoices" in text
    assert ROWS > COUNT_BOUND
    # Later pages go on being counted a few pages ahead, and answer.
    deep = COUNT_BOUND // PAGE_SIZE + 5
    response = signed_in.client.get(f"/portal/invoices?q=hosting&page={deep}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and f"page {deep}" in readable(html)
    assert f"page={deep + 1}" in html  # a next page
    assert f'page={COUNT_BOUND // PAGE_SIZE}"' not in html  # no made-up last page


def test_a_narrow_search_is_counted_exactly(
    connection: Connection, recorded: Recorder, signed_in: Auth
) -> None:
    response = signed_in.client.get("/portal/invoices?q=PLA-000012")
    text = readable(response.get_data(as_text=True))
    assert "1 invoice" in text and "more than" not in text


def test_the_payment_history_is_counted_up_to_a_bound(
    client: Any, signed_in: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paging, "COUNT_BOUND", 2)
    monkeypatch.setattr(paging, "AHEAD", 0)
    monkeypatch.setattr(payment_history, "PAGE_SIZE", 1)
    html = signed_in.client.get("/portal/payment-history").get_data(as_text=True)
    assert "more than 2 payments, page 1" in readable(html)
    assert "page=2" in html
    # Asked for a later page, the count reaches that far (and no further than needed).
    html = signed_in.client.get("/portal/payment-history?page=2").get_data(as_text=True)
    assert "page 2" in readable(html)
