"""The invoice list's search: a case-insensitive substring of the invoice's number, its reference
(the customer's PO) or any of its lines' descriptions, found through a text index.

The meaning is the one the list always had, `ILIKE '%q%'` on each of those columns (a `%`, `_`
or backslash in the query is a literal character); only the way there changes, so that finding
a word does not read every invoice of the customer's history:

- PostgreSQL: `invoices.search_text` (migration 0009: the number, the reference and every line's
  description joined by U+001F, kept by triggers) with a `pg_trgm` GIN index serves
  `ILIKE '%q%'` as it is. A literal substring (wildcards escaped) can only match across two parts
  if it holds U+001F: such a query checks each column as before. One condition on one column
  lets the planner weigh how common the text is (from the column's statistics): a word in many
  invoices walks the scope's issue-date index and stops at the page; a rare one goes through the
  trigram index.
- SQLite: an FTS5 table with the `trigram` tokenizer, `invoice_search` (migration 0009), holds
  one row per invoice (rowid = the invoice's id; `lower()` of its number, of its reference and
  of every line's description, one per line), kept in step by triggers. SQLite's ILIKE is
  `lower(column) LIKE lower(pattern)`, so a case-sensitive trigram phrase (an FTS5 string, in
  which `"`, `*`, `^`, `AND`, `NEAR(` are plain characters) of `lower(q)` finds exactly the same
  invoices; the tokenizer's own case folding, wider than SQLite's `lower()`, is not used. A
  query holding a line break could match across two descriptions: ILIKE confirms those.

The text index holds every company's rows; it is only ever reached through `invoices.id`, which
the tenancy filter (and on PostgreSQL row-level security) scopes, so it shows nothing of
another company.

Caveat (PostgreSQL): for a role that row-level security applies to (no BYPASSRLS, not a
superuser), the planner does not use an index for a condition whose operator is not LEAKPROOF
ahead of the policy, and `ILIKE` is not; such a role gets the scope's index and a filter, the
cost the list had before. Tests and the benchmark connect as a superuser.

A query shorter than three characters has no trigram to look up: it keeps the plain `ILIKE`
condition, which reads the scope's invoices through the company or account index (the list's
first page stops after 25 matches in date order; its count reads them all).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    String,
    and_,
    column,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from portal.models import Invoice, InvoiceLine

TRIGRAM = 3  # characters: the shortest query a trigram index can answer

# SQLite's FTS5 table, a Core construct only: it is not a model (no company of its own, never
# queried but through invoices), so the ORM's tenancy never sees it.
TEXT_TABLE = "invoice_search"
_text = table(TEXT_TABLE, column("rowid"), column(TEXT_TABLE))

# What migration 0009 creates outside the models: the FTS5 table and the tables FTS5 keeps
# for it (SQLite), the trigram indexes (PostgreSQL). The schema comparison leaves them alone.
OUTSIDE_THE_MODELS = frozenset(
    {
        TEXT_TABLE,
        *(f"{TEXT_TABLE}_{shadow}" for shadow in ("data", "idx", "content", "docsize", "config")),
        "search_text",
        "ix_invoices_search_text_trgm",
    }
)
SEPARATOR = "\x1f"  # between the parts of invoices.search_text (PostgreSQL)
_search_text = literal_column("invoices.search_text", String)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _ilike(pattern: str, line_match: Any) -> ColumnElement[bool]:
    return or_(
        Invoice.number.ilike(pattern, escape="\\"),
        Invoice.reference.ilike(pattern, escape="\\"),
        line_match,
    )


class _ByDialect(ColumnElement[bool]):
    """One condition written two ways; the statement's dialect picks one when it compiles (the
    list's query is built before it meets a session)."""

    __visit_name__ = "invoice_search_by_dialect"
    type = Boolean()
    inherit_cache = True
    _traverse_internals = [
        ("postgresql", InternalTraversal.dp_clauseelement),
        ("sqlite", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, postgresql: ColumnElement[bool], sqlite: ColumnElement[bool]) -> None:
        self.postgresql = postgresql
        self.sqlite = sqlite


@compiles(_ByDialect, "postgresql")
def _on_postgresql(element: _ByDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.postgresql, **kw)


@compiles(_ByDialect)
def _elsewhere(element: _ByDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.sqlite, **kw)


def matching(q: str) -> ColumnElement[bool]:
    """The condition on `Invoice` for the search text `q` (already stripped, not empty)."""
    pattern = f"%{_escape_like(q)}%"
    in_lines = select(InvoiceLine.invoice_id).where(
        InvoiceLine.description.ilike(pattern, escape="\\")
    )
    each_column = _ilike(pattern, Invoice.id.in_(in_lines))  # the plain meaning, no index
    if len(q) < TRIGRAM:
        return each_column
    # On PostgreSQL one column holds all three; a match across two of its parts needs U+001F.
    in_trigrams = each_column if SEPARATOR in q else _search_text.ilike(pattern, escape="\\")
    # The text index holds lower(...) of each column, as ILIKE compares them, so a phrase of
    # lower(q) matches exactly where ILIKE does; only a line break in q could match across two
    # lines' descriptions (the index joins them with one), and then ILIKE confirms.
    lowered = func.lower(literal(q, String))
    phrase = literal('"', String) + func.replace(lowered, '"', '""') + literal('"', String)
    in_text: ColumnElement[bool] = Invoice.id.in_(
        select(_text.c.rowid).where(_text.c[TEXT_TABLE].op("MATCH")(phrase))
    )
    if "\n" in q:
        line_has_it = exists().where(
            InvoiceLine.invoice_id == Invoice.id,
            InvoiceLine.description.ilike(pattern, escape="\\"),
        )
        in_text = and_(in_text, _ilike(pattern, line_has_it))
    return _ByDialect(postgresql=in_trigrams, sqlite=in_text)
