"""indexes behind every sort of the invoice list

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_invoices_company_issue": ["company_id", "issue_date"],
    "ix_invoices_company_due": ["company_id", "due_date"],
    "ix_invoices_company_total": ["company_id", "total"],
    "ix_invoices_account_total": ["billing_account_id", "total"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "invoices", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="invoices")
