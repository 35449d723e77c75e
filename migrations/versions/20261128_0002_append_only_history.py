"""append-only history: the database refuses to rewrite payments and the audit log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Payments may change status but never their amount, currency, owner or idempotency key, and are
never deleted; payment allocations and audit events are never updated or deleted. The one way
through is a row in append_only_overrides inside the same transaction, which only the operator
purge (`flask seed clean`) inserts and removes again before it commits.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FROZEN_PAYMENT_COLUMNS = ("amount", "currency", "idempotency_key", "company_id", "created_at")
NO_UPDATE = ("audit_events", "payment_allocations")
NO_DELETE = ("audit_events", "payment_allocations", "payments")
UNLESS_OVERRIDE = "NOT EXISTS (SELECT 1 FROM append_only_overrides)"


def upgrade() -> None:
    op.create_table(
        "append_only_overrides",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("reason", sa.String(60), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_up()
    else:
        _sqlite_up()


def _sqlite_up() -> None:
    for table in NO_UPDATE:
        op.execute(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            f"WHEN {UNLESS_OVERRIDE} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )
    for table in NO_DELETE:
        op.execute(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            f"WHEN {UNLESS_OVERRIDE} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in FROZEN_PAYMENT_COLUMNS)
    op.execute(
        "CREATE TRIGGER payments_frozen_columns BEFORE UPDATE ON payments "
        f"WHEN ({changed}) AND {UNLESS_OVERRIDE} "
        "BEGIN SELECT RAISE(ABORT, 'a payment''s amount, currency and key never change'); END"
    )


def _postgresql_up() -> None:
    op.execute(
        f"""
        CREATE FUNCTION portal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF {UNLESS_OVERRIDE} THEN
            RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'P0001';
          END IF;
          IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
          RETURN NEW;
        END $$;
        """
    )
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in FROZEN_PAYMENT_COLUMNS)
    op.execute(
        f"""
        CREATE FUNCTION portal_payment_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF ({changed}) AND {UNLESS_OVERRIDE} THEN
            RAISE EXCEPTION 'a payment''s amount, currency and key never change'
              USING ERRCODE = 'P0001';
          END IF;
          RETURN NEW;
        END $$;
        """
    )
    for table in NO_UPDATE:
        op.execute(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION portal_append_only()"
        )
    for table in NO_DELETE:
        op.execute(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION portal_append_only()"
        )
    op.execute(
        "CREATE TRIGGER payments_frozen_columns BEFORE UPDATE ON payments "
        "FOR EACH ROW EXECUTE FUNCTION portal_payment_frozen()"
    )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    suffix = lambda table: f" ON {table}" if postgresql else ""  # noqa: E731
    op.execute(f"DROP TRIGGER payments_frozen_columns{suffix('payments')}")
    for table in NO_DELETE:
        op.execute(f"DROP TRIGGER {table}_no_delete{suffix(table)}")
    for table in NO_UPDATE:
        op.execute(f"DROP TRIGGER {table}_no_update{suffix(table)}")
    if postgresql:
        op.execute("DROP FUNCTION portal_payment_frozen()")
        op.execute("DROP FUNCTION portal_append_only()")
    op.drop_table("append_only_overrides")
