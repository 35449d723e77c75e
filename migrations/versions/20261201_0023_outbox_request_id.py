"""outbox request id: the request (X-Request-ID) that asked for a piece of work, for its logs

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain nullable ADD COLUMN on both databases: no rewrite, no batch rebuild.
    op.add_column("outbox", sa.Column("request_id", sa.String(128), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE outbox DROP COLUMN request_id")
    else:
        op.drop_column("outbox", "request_id")
