"""disputes as conversations: attachments, outcomes, withdrawal

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30

- `dispute_attachments`: a file sent with a dispute's message (PDF, PNG or JPEG, its type the
  one its bytes show), kept in the file store under `storage_key`.
- `disputes` gains its outcome: `outcome_reason`, `credit_note_id` (the credit note that
  resolved it), `withdrawn_at`; its statuses become open, under_review, credit_issued (was
  "resolved"), rejected and withdrawn.

SQLite cannot change a CHECK in place: `disputes` and `dispute_messages` (whose foreign key
would cascade a drop of `disputes`) are copied aside, re-created and filled again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SYSTEM = "current_setting('app.system', true) = 'on'"
COMPANY = "NULLIF(current_setting('app.company_id', true), '')::integer"
REASONS = ("incorrect_amount", "not_received", "duplicate", "quality", "other")
OLD_STATUSES = ("open", "under_review", "resolved", "rejected")
STATUSES = ("open", "under_review", "credit_issued", "rejected", "withdrawn")
DISPUTE_COLUMNS = (
    "id, invoice_id, opened_by_user_id, reason, status, amount_disputed, created_at, "
    "resolved_at, public_id, billing_account_id, company_id"
)
MESSAGE_COLUMNS = (
    "id, dispute_id, author_user_id, author_kind, body, created_at, billing_account_id, "
    "company_id"
)


def _enum(values: tuple[str, ...], name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def _protect(table: str) -> None:
    """Row-level security and grants as migration 0012 gives its tables."""
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


def _disputes_table(statuses: tuple[str, ...], *, outcome: bool) -> None:
    extra: list[sa.Column[object]] = []
    constraints: list[sa.Constraint] = []
    if outcome:
        extra = [
            sa.Column("outcome_reason", sa.String(500), nullable=True),
            sa.Column("credit_note_id", sa.Integer(), nullable=True),
            sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        ]
        constraints = [
            sa.ForeignKeyConstraint(
                ["credit_note_id"],
                ["credit_notes.id"],
                name=op.f("fk_disputes_credit_note_id_credit_notes"),
                ondelete="SET NULL",
            )
        ]
    op.create_table(
        "disputes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("opened_by_user_id", sa.Integer(), nullable=True),
        sa.Column("reason", _enum(REASONS, "dispute_reason"), nullable=False),
        sa.Column("status", _enum(statuses, "dispute_status"), nullable=False),
        sa.Column("amount_disputed", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("billing_account_id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        *extra,
        sa.CheckConstraint("amount_disputed >= 0", name=op.f("ck_disputes_amount_not_negative")),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.id"],
            name=op.f("fk_disputes_billing_account_id_billing_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_disputes_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_disputes_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["opened_by_user_id"],
            ["portal_users.id"],
            name=op.f("fk_disputes_opened_by_user_id_portal_users"),
            ondelete="SET NULL",
        ),
        *constraints,
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disputes")),
        sa.UniqueConstraint("public_id", name=op.f("uq_disputes_public_id")),
    )
    for column in ("billing_account_id", "company_id", "invoice_id"):
        op.create_index(op.f(f"ix_disputes_{column}"), "disputes", [column])
    if outcome:
        op.create_index(op.f("ix_disputes_credit_note_id"), "disputes", ["credit_note_id"])


def _messages_table() -> None:
    op.create_table(
        "dispute_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dispute_id", sa.Integer(), nullable=False),
        sa.Column("author_user_id", sa.Integer(), nullable=True),
        sa.Column("author_kind", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("billing_account_id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_user_id"],
            ["portal_users.id"],
            name=op.f("fk_dispute_messages_author_user_id_portal_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.id"],
            name=op.f("fk_dispute_messages_billing_account_id_billing_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_dispute_messages_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["dispute_id"],
            ["disputes.id"],
            name=op.f("fk_dispute_messages_dispute_id_disputes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute_messages")),
    )
    for column in ("billing_account_id", "company_id", "dispute_id"):
        op.create_index(op.f(f"ix_dispute_messages_{column}"), "dispute_messages", [column])


def _rebuild_sqlite(statuses: tuple[str, ...], *, outcome: bool, status_sql: str) -> None:
    """Re-create both tables with `statuses` (and the outcome columns when `outcome`);
    `status_sql` maps the old row's status."""
    op.execute("PRAGMA defer_foreign_keys = ON")
    op.execute("DROP TABLE IF EXISTS disputes_0016_holder")
    op.execute("DROP TABLE IF EXISTS dispute_messages_0016_holder")
    op.execute("CREATE TABLE disputes_0016_holder AS SELECT * FROM disputes")
    op.execute("CREATE TABLE dispute_messages_0016_holder AS SELECT * FROM dispute_messages")
    op.execute("DROP TABLE dispute_messages")
    op.execute("DROP TABLE disputes")
    _disputes_table(statuses, outcome=outcome)
    _messages_table()
    columns = DISPUTE_COLUMNS.replace("status, ", "")
    op.execute(
        f"INSERT INTO disputes ({columns}, status) "
        f"SELECT {columns}, {status_sql} FROM disputes_0016_holder ORDER BY id"
    )
    op.execute(
        f"INSERT INTO dispute_messages ({MESSAGE_COLUMNS}) "
        f"SELECT {MESSAGE_COLUMNS} FROM dispute_messages_0016_holder ORDER BY id"
    )
    op.execute("DROP TABLE disputes_0016_holder")
    op.execute("DROP TABLE dispute_messages_0016_holder")


def _postgresql_statuses(statuses: tuple[str, ...], update: str) -> None:
    op.execute("ALTER TABLE disputes DROP CONSTRAINT ck_disputes_dispute_status")
    op.execute(update)
    allowed = ", ".join(f"'{value}'" for value in statuses)
    op.execute(
        "ALTER TABLE disputes ADD CONSTRAINT ck_disputes_dispute_status "
        f"CHECK (status IN ({allowed}))"
    )


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        _postgresql_statuses(
            STATUSES, "UPDATE disputes SET status = 'credit_issued' WHERE status = 'resolved'"
        )
        op.add_column("disputes", sa.Column("outcome_reason", sa.String(500), nullable=True))
        op.add_column("disputes", sa.Column("credit_note_id", sa.Integer(), nullable=True))
        op.add_column(
            "disputes", sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True)
        )
        op.create_foreign_key(
            op.f("fk_disputes_credit_note_id_credit_notes"),
            "disputes",
            "credit_notes",
            ["credit_note_id"],
            ["id"],
            ondelete="SET NULL",
        )
        op.create_index(op.f("ix_disputes_credit_note_id"), "disputes", ["credit_note_id"])
    else:
        _rebuild_sqlite(
            STATUSES,
            outcome=True,
            status_sql="CASE status WHEN 'resolved' THEN 'credit_issued' ELSE status END",
        )
    op.create_table(
        "dispute_attachments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("public_id", sa.String(40), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("billing_account_id", sa.Integer(), nullable=False),
        sa.Column("dispute_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("storage_key", sa.String(300), nullable=False),
        sa.Column("filename", sa.String(200), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "size_bytes >= 0", name=op.f("ck_dispute_attachments_size_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_dispute_attachments_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.id"],
            name=op.f("fk_dispute_attachments_billing_account_id_billing_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["dispute_id"],
            ["disputes.id"],
            name=op.f("fk_dispute_attachments_dispute_id_disputes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["dispute_messages.id"],
            name=op.f("fk_dispute_attachments_message_id_dispute_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute_attachments")),
        sa.UniqueConstraint("public_id", name=op.f("uq_dispute_attachments_public_id")),
    )
    for column in ("company_id", "billing_account_id", "dispute_id", "message_id"):
        op.create_index(
            op.f(f"ix_dispute_attachments_{column}"), "dispute_attachments", [column]
        )
    if postgresql:
        _protect("dispute_attachments")


def downgrade() -> None:
    op.drop_table("dispute_attachments")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(op.f("ix_disputes_credit_note_id"), table_name="disputes")
        op.drop_constraint(
            op.f("fk_disputes_credit_note_id_credit_notes"), "disputes", type_="foreignkey"
        )
        for column in ("withdrawn_at", "credit_note_id", "outcome_reason"):
            op.drop_column("disputes", column)
        _postgresql_statuses(
            OLD_STATUSES,
            "UPDATE disputes SET status = CASE status WHEN 'credit_issued' THEN 'resolved' "
            "WHEN 'withdrawn' THEN 'rejected' ELSE status END",
        )
    else:
        _rebuild_sqlite(
            OLD_STATUSES,
            outcome=False,
            status_sql=(
                "CASE status WHEN 'credit_issued' THEN 'resolved' "
                "WHEN 'withdrawn' THEN 'rejected' ELSE status END"
            ),
        )
