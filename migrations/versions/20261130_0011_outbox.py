"""outbox: background work as rows, written with the change that asks for it

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

Every piece of background work (mail, a settlement, a scheduled payment's run) is a row of
`outbox`, inserted in the same transaction as the change that asks for it; Redis only carries its
id to a worker, and the row records how far it got (portal/services/outbox.py). `job_schedules`
holds when each recurring job is next due, so the sweep comes back by itself whatever happens to
Redis or a worker.

Both tables are global (no company column): the dispatcher reads them across companies.
PostgreSQL: whatever role may write payments may write them (requests insert work rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = ("pending", "queued", "running", "sending", "done", "failed")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job", sa.String(120), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("subject", sa.String(80), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                *STATES, name="work_state", native_enum=False, create_constraint=True, length=32
            ),
            nullable=False,
        ),
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("dispatched", sa.Integer(), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(120), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index("ix_outbox_state_run_after", "outbox", ["state", "run_after"])
    op.create_index("ix_outbox_subject", "outbox", ["subject"])
    op.create_table(
        "job_schedules",
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_schedules")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DO $$ DECLARE grantee text; BEGIN "
            "FOR grantee IN SELECT DISTINCT p.grantee FROM information_schema.table_privileges p "
            "WHERE p.table_name = 'payments' AND p.privilege_type = 'INSERT' "
            "AND p.grantee <> current_user AND p.grantee <> 'PUBLIC' LOOP "
            "EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON outbox, job_schedules "
            "TO %I', grantee); "
            "EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE outbox_id_seq TO %I', grantee); "
            "END LOOP; END $$"
        )


def downgrade() -> None:
    op.drop_table("job_schedules")
    op.drop_index("ix_outbox_subject", table_name="outbox")
    op.drop_index("ix_outbox_state_run_after", table_name="outbox")
    op.drop_table("outbox")
