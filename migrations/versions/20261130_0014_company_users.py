"""company user administration: invitations and deactivation

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30

`portal_users` gains what `/portal/users` needs (portal/services/users.py): who invited a user
(`invited_by_user_id`), the current invitation link's nonce and when it was sent (a resent link
gets a new nonce, so the old one opens nothing), and when an administrator deactivated them.
The table keeps its row-level security (migration 0004); no new table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("portal_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invited_by_user_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("invitation_nonce", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("invitation_sent_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_portal_users_invited_by_user_id_portal_users"),
            "portal_users",
            ["invited_by_user_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("portal_users", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_portal_users_invited_by_user_id_portal_users"), type_="foreignkey"
        )
        batch_op.drop_column("deactivated_at")
        batch_op.drop_column("invitation_sent_at")
        batch_op.drop_column("invitation_nonce")
        batch_op.drop_column("invited_by_user_id")
