"""notification topics: security alerts, autopay, cards near expiry

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-01

`notification_preferences.topic` and `notifications.topic` take three more topics. The topic is
a string checked by a constraint on both databases (`str_enum`: no native PostgreSQL enum), so
each check is replaced: in place on PostgreSQL, by a rebuild of the table from its definition
on SQLite (neither table has triggers; the rebuild brings its indexes back).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_TOPICS = (
    "invoice_issued",
    "payment_due",
    "payment_overdue",
    "payment_receipt",
    "payment_failed",
    "statement_ready",
    "monthly_statement",
    "dispute_updated",
)
TOPICS = (*OLD_TOPICS, "security_alert", "autopay", "card_expiring")
TABLES = ("notification_preferences", "notifications")


def _topic(values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name="topic", native_enum=False, create_constraint=True, length=32)


def _metadata() -> sa.MetaData:
    metadata = sa.MetaData(naming_convention={"ck": "ck_%(table_name)s_%(constraint_name)s"})
    sa.Table("companies", metadata, sa.Column("id", sa.Integer(), primary_key=True))
    sa.Table("portal_users", metadata, sa.Column("id", sa.Integer(), primary_key=True))
    return metadata


def _owned(table: str) -> list[sa.SchemaItem]:
    return [
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=f"fk_{table}_company_id_companies",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["portal_users.id"],
            name=f"fk_{table}_user_id_portal_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.Index(f"ix_{table}_company_id", "company_id"),
    ]


def _preferences(values: tuple[str, ...]) -> sa.Table:
    return sa.Table(
        "notification_preferences",
        _metadata(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("topic", _topic(values), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        *_owned("notification_preferences"),
        sa.UniqueConstraint(
            "user_id", "topic", "channel", name="uq_notification_preferences_user_id_topic_channel"
        ),
    )


def _notifications(values: tuple[str, ...]) -> sa.Table:
    return sa.Table(
        "notifications",
        _metadata(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(40), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("topic", _topic(values), nullable=False),
        sa.Column("key", sa.String(120), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("link", sa.String(300), nullable=True),
        sa.Column("in_portal", sa.Boolean(), nullable=False),
        sa.Column("by_email", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        *_owned("notifications"),
        sa.UniqueConstraint("public_id", name="uq_notifications_public_id"),
        sa.UniqueConstraint("user_id", "topic", "key", name="uq_notifications_user_id_topic_key"),
        sa.Index("ix_notifications_user_shown_created", "user_id", "in_portal", "created_at"),
        sa.Index("ix_notifications_user_shown_read", "user_id", "in_portal", "read_at"),
    )


def _topics_check(values: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        listed = ", ".join(f"'{v}'" for v in values)
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS ck_{table}_topic")
            op.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT ck_{table}_topic CHECK (topic IN ({listed}))"
            )
        return
    for definition in (_preferences(values), _notifications(values)):
        with op.batch_alter_table(definition.name, recreate="always", copy_from=definition):
            pass


def upgrade() -> None:
    _topics_check(TOPICS)


def downgrade() -> None:
    old = ", ".join(repr(t) for t in OLD_TOPICS)
    for table in TABLES:
        op.execute(f"DELETE FROM {table} WHERE topic NOT IN ({old})")  # noqa: S608 (constants)
    _topics_check(OLD_TOPICS)
