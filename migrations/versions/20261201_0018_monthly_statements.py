"""monthly statements: a statement the portal asks for itself, once per user and month

Revision ID: 0018
Revises: 0016
Create Date: 2026-12-01

- `statements.period` ("YYYY-MM"): set on the monthly statement the monthly-statement job
  asks for on a user's behalf (None for one a user asked for), and unique per user, so the job
  run twice (or twice at once) asks once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("statements", sa.Column("period", sa.String(7), nullable=True))
    op.create_index(
        "ux_statements_user_period",
        "statements",
        ["requested_by_user_id", "period"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ux_statements_user_period", table_name="statements")
    op.drop_column("statements", "period")
