"""company code: the receivables system's key for a company (imports and the operator API)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN and a unique index on both databases (no batch rebuild of companies).
    op.add_column("companies", sa.Column("code", sa.String(40), nullable=True))
    op.create_index("ix_companies_code", "companies", ["code"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_companies_code", table_name="companies")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE companies DROP COLUMN code")
    else:
        op.drop_column("companies", "code")
