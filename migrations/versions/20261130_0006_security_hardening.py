"""security hardening: one sign-in throttle for every address, known or not; a TOTP secret
offered during enrolment belongs to the session it was shown to

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

`login_throttles` replaces `portal_users.failed_attempts` / `locked_until` (which only counted
addresses that have an account). Secrets that were stored on unenrolled users before they
confirmed them could have been seen by anyone holding the password: they are discarded, and
the next visit to /mfa/setup offers that session a secret of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _as_system() -> None:
    """On PostgreSQL row-level security binds the owner too: this migration acts across
    companies, as the sign-in lookups do."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT set_config('app.system', 'on', true)")


def upgrade() -> None:
    op.create_table(
        "login_throttles",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_login_throttles")),
    )
    op.create_index(
        op.f("ix_login_throttles_window_started_at"), "login_throttles", ["window_started_at"]
    )
    with op.batch_alter_table("user_sessions") as batch:
        batch.add_column(sa.Column("mfa_pending_secret", sa.LargeBinary(), nullable=True))
    _as_system()
    op.execute(
        "UPDATE portal_users SET mfa_secret_encrypted = NULL WHERE mfa_enrolled_at IS NULL"
    )
    # SQLite drops a plain column in place (3.35+). Batch mode would rebuild portal_users, and
    # with foreign keys on, dropping the old table would cascade to every row that names a user.
    for column in ("failed_attempts", "locked_until"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE portal_users DROP COLUMN {column}")
        else:
            op.drop_column("portal_users", column)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute(
            "ALTER TABLE portal_users ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0"
        )
        op.execute("ALTER TABLE portal_users ADD COLUMN locked_until DATETIME")
        op.execute("ALTER TABLE user_sessions DROP COLUMN mfa_pending_secret")
    else:
        op.add_column(
            "portal_users",
            sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"),
        )
        op.add_column(
            "portal_users", sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True)
        )
        op.drop_column("user_sessions", "mfa_pending_secret")
    op.drop_index(op.f("ix_login_throttles_window_started_at"), table_name="login_throttles")
    op.drop_table("login_throttles")
