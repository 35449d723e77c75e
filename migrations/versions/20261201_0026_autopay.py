"""autopay: a setting per billing account, a row per step the job takes on an invoice

Revision ID: 0026
Revises: 0024
Create Date: 2026-12-01

- `autopay_settings`: one per billing account (UNIQUE): the saved method, the timing (due date,
  or N days after issue, N 0-90), the notice's lead time (0-14 days), who consented and when,
  on or off and why.
- `autopay_steps`: one row per (invoice, kind, attempt): a notice, each charge attempt and the
  payment it made, a skip, a disputed invoice passed over, the end of the retries. The UNIQUE
  constraint makes each happen once whatever runs the job.
Both are tenant tables: row-level security and grants on PostgreSQL, as migration 0015's.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SYSTEM = "current_setting('app.system', true) = 'on'"
COMPANY = "NULLIF(current_setting('app.company_id', true), '')::integer"
GRANTEES = (
    "DO $$ DECLARE grantee text; BEGIN "
    "FOR grantee IN SELECT DISTINCT p.grantee FROM information_schema.table_privileges p "
    "WHERE p.table_name = 'payments' AND p.privilege_type = 'INSERT' "
    "AND p.grantee <> current_user AND p.grantee <> 'PUBLIC' LOOP {body} END LOOP; END $$"
)
TABLES = ("autopay_settings", "autopay_steps")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def _protect(table: str) -> None:
    """Row-level security and grants as migration 0015 gives its tables."""
    rule = f"({SYSTEM} OR company_id = {COMPANY})"
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON {table} USING {rule} WITH CHECK {rule}")
    op.execute(
        GRANTEES.format(
            body=f"EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO %I', "
            "grantee); "
            f"EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE {table}_id_seq TO %I', grantee);"
        )
    )


def _owner(table: str) -> list[sa.SchemaItem]:
    return [
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("billing_account_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=f"fk_{table}_company_id_companies",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.id"],
            name=f"fk_{table}_billing_account_id_billing_accounts",
            ondelete="CASCADE",
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "autopay_settings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("public_id", sa.String(40), nullable=False),
        *_owner("autopay_settings"),
        sa.Column("payment_method_id", sa.Integer(), nullable=False),
        sa.Column("timing", _enum("autopay_timing", "due_date", "after_issue"), nullable=False),
        sa.Column("days_after_issue", sa.Integer(), nullable=False),
        sa.Column("notice_days", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column(
            "off_reason",
            _enum("autopay_off", "user", "method_removed", "consent_lost"),
            nullable=True,
        ),
        sa.Column("off_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("off_told", sa.Boolean(), nullable=False),
        sa.Column("consented_by_user_id", sa.Integer(), nullable=True),
        sa.Column("consented_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "days_after_issue BETWEEN 0 AND 90",
            name="ck_autopay_settings_days_after_issue_range",
        ),
        sa.CheckConstraint(
            "notice_days BETWEEN 0 AND 14", name="ck_autopay_settings_notice_days_range"
        ),
        sa.ForeignKeyConstraint(
            ["payment_method_id"],
            ["payment_methods.id"],
            name="fk_autopay_settings_payment_method_id_payment_methods",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["consented_by_user_id"],
            ["portal_users.id"],
            name="fk_autopay_settings_consented_by_user_id_portal_users",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_autopay_settings"),
        sa.UniqueConstraint("public_id", name="uq_autopay_settings_public_id"),
        sa.UniqueConstraint(
            "billing_account_id", name="uq_autopay_settings_billing_account_id"
        ),
    )
    for column in ("company_id", "billing_account_id", "payment_method_id", "consented_by_user_id"):
        op.create_index(f"ix_autopay_settings_{column}", "autopay_settings", [column])
    op.create_table(
        "autopay_steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        *_owner("autopay_steps"),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            _enum("autopay_step", "notice", "charge", "skipped", "disputed", "stopped"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name="fk_autopay_steps_invoice_id_invoices",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name="fk_autopay_steps_payment_id_payments",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["portal_users.id"],
            name="fk_autopay_steps_user_id_portal_users",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_autopay_steps"),
        sa.UniqueConstraint(
            "invoice_id", "kind", "attempt", name="uq_autopay_steps_invoice_id_kind_attempt"
        ),
    )
    for column in ("company_id", "billing_account_id", "payment_id"):
        op.create_index(f"ix_autopay_steps_{column}", "autopay_steps", [column])
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            _protect(table)


def downgrade() -> None:
    op.drop_table("autopay_steps")
    op.drop_table("autopay_settings")
