"""a text index behind the invoice list's search (number, reference, line descriptions)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

The search is a case-insensitive substring (`ILIKE '%q%'`) of an invoice's number, reference or
any line's description; without an index it read every invoice (and line) of the scope.

PostgreSQL: `pg_trgm` (a trusted extension) and a GIN trigram index on each searched column;
`ILIKE '%q%'` uses them as written (the index is lossy, the heap rechecks, so the meaning is
unchanged). No new table, so nothing new for row-level security.

SQLite: an FTS5 table with the `trigram` tokenizer (SQLite 3.34 or later), `invoice_search`,
one row per invoice (rowid = the invoice's id; `lower()` of the number, of the reference and of
every line's description, one per line: ILIKE on SQLite compares `lower()` of both sides, so a
case-sensitive index of lowered text answers exactly as it did), kept in step by triggers on
invoices (insert, update of number or reference, delete) and invoice_lines (insert, update
of description or invoice, delete), and filled from the existing rows here. It holds every company's text, like the
invoices table itself, and is only ever joined through `invoices.id`, which the tenancy filter
scopes (portal/services/invoice_search.py). A later migration that rebuilds `invoices` or
`invoice_lines` in batch mode (copy and rename) drops their triggers: it must create them again.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGRAM_INDEXES = {
    "ix_invoices_number_trgm": ("invoices", "number"),
    "ix_invoices_reference_trgm": ("invoices", "reference"),
    "ix_invoice_lines_description_trgm": ("invoice_lines", "description"),
}


def _lines_of(invoice_id: str) -> str:
    return (
        "coalesce((SELECT group_concat(lower(description), char(10)) FROM invoice_lines"
        f" WHERE invoice_id = {invoice_id}), '')"
    )


def _refresh_lines(invoice_id: str) -> str:
    return f"UPDATE invoice_search SET lines = {_lines_of(invoice_id)} WHERE rowid = {invoice_id};"


SQLITE_TRIGGERS = {
    "invoice_search_invoice_added": (
        "AFTER INSERT ON invoices BEGIN "
        "INSERT INTO invoice_search (rowid, number, reference, lines) "
        f"VALUES (NEW.id, lower(NEW.number), lower(NEW.reference), {_lines_of('NEW.id')}); END"
    ),
    "invoice_search_invoice_changed": (
        "AFTER UPDATE OF id, number, reference ON invoices "
        "WHEN NEW.id IS NOT OLD.id OR NEW.number IS NOT OLD.number"
        " OR NEW.reference IS NOT OLD.reference BEGIN "
        "DELETE FROM invoice_search WHERE rowid = OLD.id; "
        "INSERT INTO invoice_search (rowid, number, reference, lines) "
        f"VALUES (NEW.id, lower(NEW.number), lower(NEW.reference), {_lines_of('NEW.id')}); END"
    ),
    "invoice_search_invoice_removed": (
        "AFTER DELETE ON invoices BEGIN DELETE FROM invoice_search WHERE rowid = OLD.id; END"
    ),
    "invoice_search_line_added": (
        f"AFTER INSERT ON invoice_lines BEGIN {_refresh_lines('NEW.invoice_id')} END"
    ),
    "invoice_search_line_changed": (
        "AFTER UPDATE OF invoice_id, description ON invoice_lines "
        "WHEN NEW.invoice_id IS NOT OLD.invoice_id OR NEW.description IS NOT OLD.description "
        f"BEGIN {_refresh_lines('OLD.invoice_id')} {_refresh_lines('NEW.invoice_id')} END"
    ),
    "invoice_search_line_removed": (
        f"AFTER DELETE ON invoice_lines BEGIN {_refresh_lines('OLD.invoice_id')} END"
    ),
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for name, (table, column) in TRIGRAM_INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON {table} USING gin ({column} gin_trgm_ops)")
        return
    op.execute(
        "CREATE VIRTUAL TABLE invoice_search USING fts5"
        "(number, reference, lines, tokenize = 'trigram case_sensitive 1')"
    )
    for name, body in SQLITE_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(
        "INSERT INTO invoice_search (rowid, number, reference, lines) "
        f"SELECT id, lower(number), lower(reference), {_lines_of('invoices.id')} FROM invoices"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in TRIGRAM_INDEXES:
            op.execute(f"DROP INDEX {name}")
        # pg_trgm stays: other objects may use it, and it holds no data.
        return
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")
    op.execute("DROP TABLE invoice_search")
