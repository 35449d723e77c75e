"""profile: phone, job title, time zone and number format on portal users

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("phone", 32),
    ("job_title", 100),
    ("timezone", 64),
    ("number_locale", 16),
)


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: batch mode would rebuild portal_users on SQLite.
    for name, length in _COLUMNS:
        op.add_column("portal_users", sa.Column(name, sa.String(length), nullable=True))


def downgrade() -> None:
    for name, _length in reversed(_COLUMNS):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE portal_users DROP COLUMN {name}")
        else:
            op.drop_column("portal_users", name)
