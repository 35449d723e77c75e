"""online payments: the gateway's webhook log, the sandbox gateway's store, 3-D Secure hand-off,
when a payment's charge began

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("action_url", sa.String(500), nullable=True))
        batch.add_column(sa.Column("charging_since", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "gateway_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("gateway", sa.String(20), nullable=False),
        sa.Column("event_id", sa.String(120), nullable=False),
        sa.Column("kind", sa.String(60), nullable=False),
        sa.Column("reference", sa.String(120), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("event_id", name="uq_gateway_events_event_id"),
    )
    op.create_index("ix_gateway_events_reference", "gateway_events", ["reference"])
    op.create_table(
        "sandbox_setups",
        sa.Column("id", sa.String(60), primary_key=True),
        sa.Column("customer", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("return_url", sa.String(500), nullable=False),
        sa.Column("cancel_url", sa.String(500), nullable=False),
        sa.Column("token", sa.String(120), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "sandbox_methods",
        sa.Column("token", sa.String(120), primary_key=True),
        sa.Column("customer", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("brand", sa.String(40), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("exp_month", sa.Integer(), nullable=True),
        sa.Column("exp_year", sa.Integer(), nullable=True),
        sa.Column("behaviour", sa.String(30), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detached_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "sandbox_charges",
        sa.Column("reference", sa.String(60), primary_key=True),
        sa.Column("idempotency_key", sa.String(80), nullable=False),
        sa.Column("token", sa.String(120), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("failure_code", sa.String(60), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settles_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("idempotency_key", name="uq_sandbox_charges_idempotency_key"),
    )


def downgrade() -> None:
    op.drop_table("sandbox_charges")
    op.drop_table("sandbox_methods")
    op.drop_table("sandbox_setups")
    op.drop_index("ix_gateway_events_reference", table_name="gateway_events")
    op.drop_table("gateway_events")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("charging_since")
        batch.drop_column("action_url")
