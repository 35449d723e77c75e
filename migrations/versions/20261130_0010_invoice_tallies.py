"""invoice tallies: balances, counts and aging kept by the database as invoices change

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

The dashboard's balances, open and overdue counts and aging, and the invoice list's counts,
used to be aggregates over every invoice of the scope on every request: their cost grew with the
customer's history. `invoice_tallies` holds, per billing account, currency, status and due date,
how many invoices there are and what they still owe. Triggers on `invoices` keep it in the same
transaction as every insert, update and delete, whoever writes (the ORM, the payment flow's bulk
UPDATEs, a COPY), so no writer can forget it. Invoices that owe nothing fold into one row per
status (due date 0001-01-01), so the number of rows follows the calendar of what is still owed,
not the number of invoices.

Decrements only UPDATE (the row exists since the invoice was counted), and delete a row whose
count reaches zero, so no row outlives the invoices it counts; only increments insert. So a
cascade that deletes a billing account never inserts a row that points at it.

PostgreSQL: the backfill acts across companies under row-level security (`app.system`, as 0006
does), holds off writers of invoices until the triggers are in place (an invoice committed in
between would go uncounted), and grants on the new table whatever role may write invoices (the
triggers run as the writer). A later batch migration that rebuilds `invoices` on SQLite (copy
and rename) drops these triggers: it must create them again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTSTANDING = "('open', 'partially_paid', 'processing', 'payment_failed', 'disputed')"
WATCHED = (
    "status",
    "due_date",
    "total",
    "amount_paid",
    "currency",
    "billing_account_id",
    "company_id",
)
KEY = ("billing_account_id", "currency", "status")


def _due(row: str, settled: str) -> str:
    """The tally row's due date for an invoice: its own while it still owes, else `settled`."""
    return (
        f"CASE WHEN {row}.status IN {OUTSTANDING} AND {row}.total - {row}.amount_paid > 0 "
        f"THEN {row}.due_date ELSE {settled} END"
    )


def _add(row: str, settled: str) -> str:
    columns = "company_id, billing_account_id, currency, status, due_date, invoice_count, balance"
    values = (
        f"{row}.company_id, {row}.billing_account_id, {row}.currency, {row}.status, "
        f"{_due(row, settled)}, 1, {row}.total - {row}.amount_paid"
    )
    return (
        f"INSERT INTO invoice_tallies ({columns}) VALUES ({values}) "
        "ON CONFLICT (billing_account_id, currency, status, due_date) DO UPDATE SET "
        "invoice_count = invoice_tallies.invoice_count + excluded.invoice_count, "
        "balance = invoice_tallies.balance + excluded.balance"
    )


def _remove(row: str, settled: str) -> str:
    """Two statements: the decrement, then the row's removal once it counts nothing."""
    match = " AND ".join(f"{column} = {row}.{column}" for column in KEY)
    where = f"WHERE {match} AND due_date = {_due(row, settled)}"
    return (
        f"UPDATE invoice_tallies SET invoice_count = invoice_count - 1, "
        f"balance = balance - ({row}.total - {row}.amount_paid) {where}; "
        f"DELETE FROM invoice_tallies {where} AND invoice_count = 0"
    )


def _changed(distinct: str) -> str:
    return " OR ".join(f"OLD.{c} {distinct} NEW.{c}" for c in WATCHED)


def _sqlite() -> None:
    settled = "'0001-01-01'"
    watched = ", ".join(WATCHED)
    op.execute(
        "CREATE TRIGGER invoice_tallies_on_insert AFTER INSERT ON invoices "
        f"BEGIN {_add('NEW', settled)}; END"
    )
    op.execute(
        "CREATE TRIGGER invoice_tallies_on_delete AFTER DELETE ON invoices "
        f"BEGIN {_remove('OLD', settled)}; END"
    )
    op.execute(
        f"CREATE TRIGGER invoice_tallies_on_update AFTER UPDATE OF {watched} ON invoices "
        f"WHEN {_changed('IS NOT')} "
        f"BEGIN {_remove('OLD', settled)}; {_add('NEW', settled)}; END"
    )


def _postgresql() -> None:
    settled = "DATE '0001-01-01'"
    op.execute(
        "CREATE FUNCTION invoice_tallies_follow() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN "
        f"IF TG_OP <> 'INSERT' THEN {_remove('OLD', settled)}; END IF; "
        f"IF TG_OP <> 'DELETE' THEN {_add('NEW', settled)}; END IF; "
        "RETURN NULL; "
        "END $$"
    )
    op.execute(
        "CREATE TRIGGER invoice_tallies_on_insert_or_delete AFTER INSERT OR DELETE ON invoices "
        "FOR EACH ROW EXECUTE FUNCTION invoice_tallies_follow()"
    )
    op.execute(
        "CREATE TRIGGER invoice_tallies_on_update AFTER UPDATE ON invoices FOR EACH ROW "
        f"WHEN ({_changed('IS DISTINCT FROM')}) EXECUTE FUNCTION invoice_tallies_follow()"
    )
    # The company rule of migration 0004, for this tenant-owned table too.
    rule = (
        "(current_setting('app.system', true) = 'on' OR company_id = "
        "NULLIF(current_setting('app.company_id', true), '')::integer)"
    )
    op.execute("ALTER TABLE invoice_tallies ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE invoice_tallies FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON invoice_tallies USING {rule} WITH CHECK {rule}")


def upgrade() -> None:
    op.create_table(
        "invoice_tallies",
        sa.Column("billing_account_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("invoice_count", sa.BigInteger(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.id"],
            name=op.f("fk_invoice_tallies_billing_account_id_billing_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_invoice_tallies_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "billing_account_id", "currency", "status", "due_date", name=op.f("pk_invoice_tallies")
        ),
    )
    op.create_index(op.f("ix_invoice_tallies_company_id"), "invoice_tallies", ["company_id"])
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("SELECT set_config('app.system', 'on', true)")  # across companies
        # Writers of invoices wait until the triggers exist: none goes uncounted meanwhile.
        op.execute("LOCK TABLE invoices IN SHARE ROW EXCLUSIVE MODE")
        # The triggers write as whoever writes invoices: that role may write the tallies too.
        op.execute(
            "DO $$ DECLARE grantee text; BEGIN "
            "FOR grantee IN SELECT DISTINCT p.grantee FROM information_schema.table_privileges p "
            "WHERE p.table_name = 'invoices' AND p.privilege_type = 'UPDATE' "
            "AND p.grantee <> current_user AND p.grantee <> 'PUBLIC' LOOP "
            "EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON invoice_tallies TO %I', "
            "grantee); END LOOP; END $$"
        )
    settled = "DATE '0001-01-01'" if postgresql else "'0001-01-01'"
    due = _due("invoices", settled)
    op.execute(
        "INSERT INTO invoice_tallies (company_id, billing_account_id, currency, status, due_date, "
        "invoice_count, balance) "
        f"SELECT company_id, billing_account_id, currency, status, {due}, count(*), "
        "sum(total - amount_paid) FROM invoices "
        f"GROUP BY company_id, billing_account_id, currency, status, {due}"
    )
    if postgresql:
        _postgresql()
    else:
        _sqlite()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER invoice_tallies_on_update ON invoices")
        op.execute("DROP TRIGGER invoice_tallies_on_insert_or_delete ON invoices")
        op.execute("DROP FUNCTION invoice_tallies_follow()")
    else:
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER invoice_tallies_on_{name}")
    op.drop_index("ix_invoice_tallies_company_id", table_name="invoice_tallies")
    op.drop_table("invoice_tallies")
