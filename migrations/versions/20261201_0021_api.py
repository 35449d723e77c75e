"""JSON API: personal tokens, operator keys and the receivables event feed

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from portal.db import UTCDateTime

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SYSTEM = "current_setting('app.system', true) = 'on'"
COMPANY = "NULLIF(current_setting('app.company_id', true), '')::integer"


def _enum(values: tuple[str, ...], name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def _grant(table: str) -> None:
    op.execute(
        "DO $$ DECLARE grantee text; BEGIN "
        "FOR grantee IN SELECT DISTINCT p.grantee FROM information_schema.table_privileges p "
        "WHERE p.table_name = 'payments' AND p.privilege_type = 'INSERT' "
        "AND p.grantee <> current_user AND p.grantee <> 'PUBLIC' LOOP "
        f"EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO %I', grantee); "
        f"EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE {table}_id_seq TO %I', grantee); "
        "END LOOP; END $$"
    )


def _protect(table: str) -> None:
    """Row-level security and grants as migration 0016 gives its tables."""
    rule = f"({SYSTEM} OR company_id = {COMPANY})"
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON {table} USING {rule} WITH CHECK {rule}")
    _grant(table)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("public_id", sa.String(40), nullable=False, unique=True),
        sa.Column(
            "company_id",
            sa.Integer(),
            sa.ForeignKey("companies.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("portal_users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", _enum(("personal", "login"), "token_kind"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("scope", _enum(("read", "read+pay"), "token_scope"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_ip", sa.String(64), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_api_tokens_user", "api_tokens", ["user_id", "revoked_at"])
    op.create_table(
        "ar_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "ar_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True
        ),
        sa.Column(
            "company_id",
            sa.Integer(),
            sa.ForeignKey("companies.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(40), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        # PostgreSQL: the writing transaction's id, so the feed can wait for older writers.
        sa.Column(
            "txid",
            sa.BigInteger(),
            nullable=True,
            server_default=sa.text("(pg_current_xact_id()::text)::bigint") if postgresql else None,
        ),
        sa.Column("webhook_attempts", sa.Integer(), nullable=False),
        sa.Column("webhook_delivered_at", UTCDateTime(), nullable=True),
        sa.Column("webhook_last_error", sa.String(300), nullable=False),
    )
    op.create_index("ix_ar_events_txid_id", "ar_events", ["txid", "id"])
    if postgresql:
        _protect("api_tokens")
        _protect("ar_events")
        _grant("ar_keys")


def downgrade() -> None:
    op.drop_index("ix_ar_events_txid_id", table_name="ar_events")
    op.drop_table("ar_events")
    op.drop_table("ar_keys")
    op.drop_index("ix_api_tokens_user", table_name="api_tokens")
    op.drop_table("api_tokens")
