"""statements generated in the background, credit notes, documents by date

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30

- `statements` is rebuilt (nothing wrote it before): a statement belongs to the user who asked
  for it (company-owned, listed by its requester), covers the billing accounts in `account_ids`,
  and records its progress, its file and its outcome (portal/services/statements/).
- `credit_notes`: credit given against one invoice. Applying one adds its amount to the
  invoice's `amount_paid` (what is settled, so the balance, its checks and the tallies' triggers
  stay as they are) and to the new `amount_credited` (the part credit notes settled).
- `documents` gains an index for the library's newest-first list.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FORMATS = ("pdf", "xlsx", "csv")
STATES = ("queued", "running", "ready", "failed", "expired")
SYSTEM = "current_setting('app.system', true) = 'on'"
COMPANY = "NULLIF(current_setting('app.company_id', true), '')::integer"
CREDIT_CHECK = "amount_credited >= 0 AND amount_credited <= amount_paid"


def _protect(table: str) -> None:
    """Row-level security as migration 0004 gives every tenant-owned table, and the grants that
    the application's role has on `payments`."""
    rule = f"({SYSTEM} OR company_id = {COMPANY})"
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON {table} USING {rule} WITH CHECK {rule}")
    op.execute(
        "DO $$ DECLARE grantee text; BEGIN "
        "FOR grantee IN SELECT DISTINCT p.grantee FROM information_schema.table_privileges p "
        "WHERE p.table_name = 'payments' AND p.privilege_type = 'INSERT' "
        "AND p.grantee <> current_user AND p.grantee <> 'PUBLIC' LOOP "
        f"EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO %I', grantee); "
        f"EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE {table}_id_seq TO %I', grantee); "
        "END LOOP; END $$"
    )


def _enum(values: tuple[str, ...], name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.drop_table("statements")
    op.create_table(
        "statements",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("public_id", sa.String(40), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("requested_by_user_id", sa.Integer(), nullable=False),
        sa.Column("account_ids", sa.JSON(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("format", _enum(FORMATS, "statement_format"), nullable=False),
        sa.Column("locale", sa.String(10), nullable=False),
        sa.Column("state", _enum(STATES, "statement_state"), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=True),
        sa.Column("storage_key", sa.String(300), nullable=True),
        sa.Column("filename", sa.String(200), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("error_code", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("available_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("start_date <= end_date", name=op.f("ck_statements_range_ordered")),
        sa.CheckConstraint(
            "progress >= 0 AND progress <= 100", name=op.f("ck_statements_progress_percent")
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_statements_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_user_id"],
            ["portal_users.id"],
            name=op.f("fk_statements_requested_by_user_id_portal_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statements")),
        sa.UniqueConstraint("public_id", name=op.f("uq_statements_public_id")),
    )
    op.create_index(op.f("ix_statements_company_id"), "statements", ["company_id"])
    op.create_index(
        "ix_statements_user_created", "statements", ["requested_by_user_id", "created_at"]
    )
    op.create_index("ix_statements_state", "statements", ["state"])

    op.create_table(
        "credit_notes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("public_id", sa.String(40), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("billing_account_id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=True),
        sa.Column("number", sa.String(40), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_credit_notes_amount_positive")),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_credit_notes_currency_iso")),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_credit_notes_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.id"],
            name=op.f("fk_credit_notes_billing_account_id_billing_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_credit_notes_invoice_id_invoices"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_credit_notes_document_id_documents"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint("public_id", name=op.f("uq_credit_notes_public_id")),
        sa.UniqueConstraint("company_id", "number", name=op.f("uq_credit_notes_company_id_number")),
    )
    for column in ("company_id", "billing_account_id", "invoice_id", "document_id"):
        op.create_index(op.f(f"ix_credit_notes_{column}"), "credit_notes", [column])
    op.create_index(
        "ix_credit_notes_account_issue", "credit_notes", ["billing_account_id", "issue_date"]
    )
    op.create_index("ix_documents_company_created", "documents", ["company_id", "created_at"])

    # A column with its check, added in place on both databases (SQLite checks it on the rows
    # there are; a rebuild of `invoices` would drop its triggers).
    op.execute(
        "ALTER TABLE invoices ADD COLUMN amount_credited BIGINT DEFAULT 0 NOT NULL "
        f"CONSTRAINT ck_invoices_credit_within_settled CHECK ({CREDIT_CHECK})"
    )
    if postgresql:
        _protect("statements")
        _protect("credit_notes")


def downgrade() -> None:
    # Before this revision nothing but payments settled an invoice: what credit notes settled
    # goes back to being owed (an invoice they had paid is open or partly paid again).
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT set_config('app.system', 'on', true)")  # across companies
    op.execute(
        """
        UPDATE invoices SET
            status = CASE
                WHEN status = 'paid' AND amount_paid - amount_credited = 0 THEN 'open'
                WHEN status = 'paid' THEN 'partially_paid'
                ELSE status END,
            paid_at = CASE WHEN status = 'paid' THEN NULL ELSE paid_at END,
            amount_paid = amount_paid - amount_credited,
            amount_credited = 0
        WHERE amount_credited > 0
        """
    )
    op.execute("ALTER TABLE invoices DROP COLUMN amount_credited")  # its check goes with it
    op.drop_index("ix_documents_company_created", table_name="documents")
    op.drop_table("credit_notes")
    op.drop_table("statements")
    _old_statements()
    if op.get_bind().dialect.name == "postgresql":
        _protect("statements")


def _old_statements() -> None:
    """The table as migration 0001 made it (never written before this revision)."""
    op.create_table(
        "statements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("requested_by_user_id", sa.Integer(), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("format", _enum(FORMATS, "statement_format"), nullable=False),
        sa.Column("state", _enum(STATES[:4], "statement_state"), nullable=False),
        sa.Column("file_path", sa.String(length=300), nullable=True),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("billing_account_id", sa.Integer(), nullable=True),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.CheckConstraint("start_date <= end_date", name=op.f("ck_statements_range_ordered")),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.id"],
            name=op.f("fk_statements_billing_account_id_billing_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_statements_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_user_id"],
            ["portal_users.id"],
            name=op.f("fk_statements_requested_by_user_id_portal_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statements")),
        sa.UniqueConstraint("public_id", name=op.f("uq_statements_public_id")),
    )
    op.create_index(
        op.f("ix_statements_billing_account_id"), "statements", ["billing_account_id"]
    )
    op.create_index("ix_statements_company_created", "statements", ["company_id", "created_at"])
    op.create_index(op.f("ix_statements_company_id"), "statements", ["company_id"])
