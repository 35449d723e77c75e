"""a text index behind the invoice list's search (number, reference, line descriptions)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

The search is a case-insensitive substring (`ILIKE '%q%'`) of an invoice's number, reference or
any line's description; without an index it read every invoice (and line) of the scope.

PostgreSQL: `pg_trgm` (a trusted extension) and `invoices.search_text`, the number, the reference
and every line's description joined by U+001F (a character no query holds but by intent: then
the list checks each column as before), kept by triggers: before an insert or a change of number
or reference on `invoices`, and after each statement that adds, changes or removes lines (one
UPDATE per statement, whatever the number of lines: a COPY of 200,000 lines is one). A GIN
trigram index on it serves `ILIKE '%q%'` (the index is lossy, the heap rechecks, so the meaning is
unchanged). One column rather than an index per column: the list's condition is then a single
`ILIKE` on `invoices`, whose selectivity the planner estimates from the column's statistics, so
it walks the scope's issue-date index for a word found in many invoices (stopping at the page)
and goes through the trigram index for a rare one. The column is not in the ORM models: the
application never writes it (`migrate.include_name` leaves it out of the schema comparison). No
new table, so nothing new for row-level security.

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

SEPARATOR = "chr(31)"  # U+001F between the parts of search_text


def _search_text(invoice: str) -> str:
    """search_text of the invoice row `invoice` (NEW, or a table alias), from its lines now."""
    lines = (
        f"(SELECT string_agg(l.description, {SEPARATOR} ORDER BY l.position) "
        f"FROM invoice_lines l WHERE l.invoice_id = {invoice}.id)"
    )
    return f"concat_ws({SEPARATOR}, {invoice}.number, {invoice}.reference, {lines})"


POSTGRES_FUNCTIONS = {
    # Before an invoice is written with a new number or reference: its text, from its lines.
    "invoice_search_text_own": (
        f"BEGIN NEW.search_text := {_search_text('NEW')}; RETURN NEW; END"
    ),
    # After a statement on lines: the text of each invoice whose lines it touched, once.
    "invoice_search_text_lines": (
        "BEGIN "
        "UPDATE invoices i SET search_text = "
        f"{_search_text('i')} "
        "WHERE i.id IN (SELECT invoice_id FROM changed_lines); "
        "RETURN NULL; END"
    ),
}
POSTGRES_TRIGGERS = {
    "invoice_search_text_own": (
        "BEFORE INSERT OR UPDATE OF number, reference ON invoices FOR EACH ROW "
        "EXECUTE FUNCTION invoice_search_text_own()"
    ),
    "invoice_search_text_lines_added": (
        "AFTER INSERT ON invoice_lines REFERENCING NEW TABLE AS changed_lines "
        "FOR EACH STATEMENT EXECUTE FUNCTION invoice_search_text_lines()"
    ),
    "invoice_search_text_lines_changed": (
        "AFTER UPDATE ON invoice_lines REFERENCING NEW TABLE AS changed_lines "
        "FOR EACH STATEMENT EXECUTE FUNCTION invoice_search_text_lines()"
    ),
    "invoice_search_text_lines_moved": (  # an update that moves lines: the old invoices too
        "AFTER UPDATE ON invoice_lines REFERENCING OLD TABLE AS changed_lines "
        "FOR EACH STATEMENT EXECUTE FUNCTION invoice_search_text_lines()"
    ),
    "invoice_search_text_lines_removed": (
        "AFTER DELETE ON invoice_lines REFERENCING OLD TABLE AS changed_lines "
        "FOR EACH STATEMENT EXECUTE FUNCTION invoice_search_text_lines()"
    ),
}
TRIGRAM_INDEX = "ix_invoices_search_text_trgm"


def _postgresql_upgrade() -> None:
    # The backfill reads every company's invoices: row-level security binds the owner too.
    op.execute("SELECT set_config('app.system', 'on', true)")
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("ALTER TABLE invoices ADD COLUMN search_text text NOT NULL DEFAULT ''")
    for name, body in POSTGRES_FUNCTIONS.items():
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ {body} $$")
    op.execute(f"UPDATE invoices i SET search_text = {_search_text('i')}")
    for name, body in POSTGRES_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(f"CREATE INDEX {TRIGRAM_INDEX} ON invoices USING gin (search_text gin_trgm_ops)")


def _postgresql_downgrade() -> None:
    for name, body in POSTGRES_TRIGGERS.items():
        table = "invoice_lines" if "invoice_lines" in body else "invoices"
        op.execute(f"DROP TRIGGER {name} ON {table}")
    for name in POSTGRES_FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
    op.execute(f"DROP INDEX {TRIGRAM_INDEX}")
    op.execute("ALTER TABLE invoices DROP COLUMN search_text")
    # pg_trgm stays: other objects may use it, and it holds no data.


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
        _postgresql_upgrade()
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
        _postgresql_downgrade()
        return
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")
    op.execute("DROP TABLE invoice_search")
