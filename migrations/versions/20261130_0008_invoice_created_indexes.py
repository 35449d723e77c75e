"""indexes behind the dashboard's recent invoices (newest first, per company or account)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

`recent_activity` asks for a scope's latest invoices by `created_at`. With no index led by the
scope and `created_at`, SQLite's planner (with statistics) chose to scan every company's
invoices in `created_at` order; these two let both databases seek the scope's newest rows.
tests/web/test_query_plans.py checks the plans.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_invoices_company_created": ["company_id", "created_at"],
    "ix_invoices_account_created": ["billing_account_id", "created_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "invoices", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="invoices")
