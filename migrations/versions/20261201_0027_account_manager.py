"""account manager: who a company contacts about its bills (name, e-mail, phone), shown in the
footer of every signed-in page and on the error pages

Revision ID: 0027
Revises: 0024
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("account_manager_name", 200),
    ("account_manager_email", 254),
    ("account_manager_phone", 32),  # E.164
)


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (no batch rebuild of companies); companies is not a
    # tenant-owned table (it is the tenant), so its policies and grants stay as they are.
    for name, length in COLUMNS:
        op.add_column("companies", sa.Column(name, sa.String(length), nullable=True))


def downgrade() -> None:
    for name, _length in reversed(COLUMNS):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE companies DROP COLUMN {name}")
        else:
            op.drop_column("companies", name)
