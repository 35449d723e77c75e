"""PostgreSQL row-level security: the company rule as a second wall behind the ORM filter

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Every tenant-owned table admits only the rows of the company named by the transaction's
`app.company_id` setting, or every row while `app.system` is 'on' (sign-in lookups, seeding,
jobs discovering work). FORCE applies the policies to the tables' owner too; only superusers and
roles with BYPASSRLS pass, so the application should connect as an ordinary role. SQLite has no
such feature: there the ORM filter (portal.tenancy) is the only wall.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMPANY_TABLES = (
    "audit_events", "billing_accounts", "dispute_messages", "disputes", "documents",
    "invoice_lines", "invoices", "notification_preferences", "payment_allocations",
    "payment_methods", "payments", "portal_users", "recovery_codes", "statements",
    "user_account_grants", "user_sessions",
)
SYSTEM = "current_setting('app.system', true) = 'on'"
COMPANY = "NULLIF(current_setting('app.company_id', true), '')::integer"


def _protect(table: str, column: str) -> None:
    rule = f"({SYSTEM} OR {column} = {COMPANY})"
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON {table} USING {rule} WITH CHECK {rule}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _protect("companies", "id")
    for table in COMPANY_TABLES:
        _protect(table, "company_id")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("companies", *COMPANY_TABLES):
        op.execute(f"DROP POLICY tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
