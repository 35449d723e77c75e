"""pending e-mail change: the address a user asked to move to, so the link names none

Revision ID: 0020
Revises: 0018
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: batch mode would rebuild portal_users on SQLite.
    op.add_column("portal_users", sa.Column("pending_email", sa.String(254), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE portal_users DROP COLUMN pending_email")
    else:
        op.drop_column("portal_users", "pending_email")
