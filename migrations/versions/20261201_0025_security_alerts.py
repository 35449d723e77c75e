"""security alerts: the alerted events, and where each user signs in from

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-01

- `security_alerts`: one row per alerted event, once per (user, kind, key); whether it was
  mailed (the rate limit records without mailing) and whether its "This wasn't me" link was used.
- `sign_in_origins`: the devices and networks (keyed hashes) a user completed a sign-in from,
  and when last.

Both are company-owned: row-level security and grants on PostgreSQL, as migration 0015 gives.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SYSTEM = "current_setting('app.system', true) = 'on'"
COMPANY = "NULLIF(current_setting('app.company_id', true), '')::integer"
GRANTEES = (
    "DO $$ DECLARE grantee text; BEGIN "
    "FOR grantee IN SELECT DISTINCT p.grantee FROM information_schema.table_privileges p "
    "WHERE p.table_name = 'payments' AND p.privilege_type = 'INSERT' "
    "AND p.grantee <> current_user AND p.grantee <> 'PUBLIC' LOOP {body} END LOOP; END $$"
)


def _protect(table: str) -> None:
    """Row-level security and grants as migration 0015 gives its tables."""
    rule = f"({SYSTEM} OR company_id = {COMPANY})"
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON {table} USING {rule} WITH CHECK {rule}")
    op.execute(
        GRANTEES.format(
            body=f"EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO %I', "
            "grantee); "
            f"EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE {table}_id_seq TO %I', grantee);"
        )
    )


def _owner_keys(table: str) -> list[sa.SchemaItem]:
    return [
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f(f"fk_{table}_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["portal_users.id"],
            name=op.f(f"fk_{table}_user_id_portal_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def upgrade() -> None:
    op.create_table(
        "security_alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("public_id", sa.String(40), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("ip_address", sa.String(64), nullable=False),
        sa.Column("device", sa.String(120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mailed", sa.Boolean(), nullable=False),
        sa.Column("secured_at", sa.DateTime(timezone=True), nullable=True),
        *_owner_keys("security_alerts"),
        sa.UniqueConstraint("public_id", name=op.f("uq_security_alerts_public_id")),
        sa.UniqueConstraint(
            "user_id", "kind", "key", name=op.f("uq_security_alerts_user_id_kind_key")
        ),
    )
    op.create_index(op.f("ix_security_alerts_company_id"), "security_alerts", ["company_id"])
    op.create_index("ix_security_alerts_user_created", "security_alerts", ["user_id", "created_at"])
    op.create_index(
        "ix_security_alerts_company_created", "security_alerts", ["company_id", "created_at"]
    )
    op.create_table(
        "sign_in_origins",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        *_owner_keys("sign_in_origins"),
        sa.UniqueConstraint(
            "user_id", "kind", "key_hash", name=op.f("uq_sign_in_origins_user_id_kind_key_hash")
        ),
    )
    op.create_index(op.f("ix_sign_in_origins_company_id"), "sign_in_origins", ["company_id"])
    if op.get_bind().dialect.name == "postgresql":
        _protect("security_alerts")
        _protect("sign_in_origins")


def downgrade() -> None:
    op.drop_table("sign_in_origins")
    op.drop_table("security_alerts")
