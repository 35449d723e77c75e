"""notifications: the centre's rows, more topics, the reminder setting

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30

- `notification_preferences.topic` takes the new topics (payment_overdue, payment_failed,
  monthly_statement). The topic is a string checked by a constraint on both databases
  (`str_enum`: no native PostgreSQL enum), so the check is replaced: in place on PostgreSQL, by
  a rebuild of the (small, trigger-free) table on SQLite.
- `notifications`: what was notified to whom, once per (user, topic, key); shown in the portal
  when `in_portal`; its text is rendered when read (portal/notifications/messages.py).
- `notification_settings`: a user's "remind me N days before the due date" (1, 3, 7 or 14).
- `notification_runs` (global): how far a recurring notification job got.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_TOPICS = ("invoice_issued", "payment_due", "payment_receipt", "statement_ready", "dispute_updated")
TOPICS = (
    "invoice_issued",
    "payment_due",
    "payment_overdue",
    "payment_receipt",
    "payment_failed",
    "statement_ready",
    "monthly_statement",
    "dispute_updated",
)
SYSTEM = "current_setting('app.system', true) = 'on'"
COMPANY = "NULLIF(current_setting('app.company_id', true), '')::integer"
GRANTEES = (
    "DO $$ DECLARE grantee text; BEGIN "
    "FOR grantee IN SELECT DISTINCT p.grantee FROM information_schema.table_privileges p "
    "WHERE p.table_name = 'payments' AND p.privilege_type = 'INSERT' "
    "AND p.grantee <> current_user AND p.grantee <> 'PUBLIC' LOOP {body} END LOOP; END $$"
)


def _topic(values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name="topic", native_enum=False, create_constraint=True, length=32)


def _protect(table: str) -> None:
    """Row-level security and grants as migration 0012 gives its tables."""
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


def _topics_check(values: tuple[str, ...]) -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    listed = ", ".join(f"'{v}'" for v in values)
    if postgresql:
        op.execute(
            "ALTER TABLE notification_preferences "
            "DROP CONSTRAINT IF EXISTS ck_notification_preferences_topic"
        )
        op.execute(
            "ALTER TABLE notification_preferences ADD CONSTRAINT "
            f"ck_notification_preferences_topic CHECK (topic IN ({listed}))"
        )
        return
    # SQLite: the table rebuilt from its definition with the new check (its indexes come back).
    with op.batch_alter_table(
        "notification_preferences", recreate="always", copy_from=_preferences(values)
    ):
        pass


def _preferences(values: tuple[str, ...]) -> sa.Table:
    """notification_preferences as migration 0001 made it, taking `values` as topics."""
    metadata = sa.MetaData(naming_convention={"ck": "ck_%(table_name)s_%(constraint_name)s"})
    sa.Table("companies", metadata, sa.Column("id", sa.Integer(), primary_key=True))
    sa.Table("portal_users", metadata, sa.Column("id", sa.Integer(), primary_key=True))
    return sa.Table(
        "notification_preferences",
        metadata,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("topic", _topic(values), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name="fk_notification_preferences_company_id_companies",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["portal_users.id"],
            name="fk_notification_preferences_user_id_portal_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notification_preferences"),
        sa.UniqueConstraint(
            "user_id", "topic", "channel", name="uq_notification_preferences_user_id_topic_channel"
        ),
        sa.Index("ix_notification_preferences_company_id", "company_id"),
    )


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    _topics_check(TOPICS)
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("public_id", sa.String(40), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("topic", _topic(TOPICS), nullable=False),
        sa.Column("key", sa.String(120), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("link", sa.String(300), nullable=True),
        sa.Column("in_portal", sa.Boolean(), nullable=False),
        sa.Column("by_email", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_notifications_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["portal_users.id"],
            name=op.f("fk_notifications_user_id_portal_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("public_id", name=op.f("uq_notifications_public_id")),
        sa.UniqueConstraint(
            "user_id", "topic", "key", name=op.f("uq_notifications_user_id_topic_key")
        ),
    )
    op.create_index(op.f("ix_notifications_company_id"), "notifications", ["company_id"])
    op.create_index(
        "ix_notifications_user_shown_created",
        "notifications",
        ["user_id", "in_portal", "created_at"],
    )
    op.create_index(
        "ix_notifications_user_shown_read", "notifications", ["user_id", "in_portal", "read_at"]
    )
    op.create_table(
        "notification_settings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("remind_days_before", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "remind_days_before IN (1, 3, 7, 14)",
            name=op.f("ck_notification_settings_remind_days_choice"),
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_notification_settings_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["portal_users.id"],
            name=op.f("fk_notification_settings_user_id_portal_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_settings")),
        sa.UniqueConstraint("user_id", name=op.f("uq_notification_settings_user_id")),
    )
    op.create_index(
        op.f("ix_notification_settings_company_id"), "notification_settings", ["company_id"]
    )
    op.create_table(
        "notification_runs",
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("done_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_notification_runs")),
    )
    if postgresql:
        _protect("notifications")
        _protect("notification_settings")
        op.execute(
            GRANTEES.format(
                body="EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON notification_runs "
                "TO %I', grantee);"
            )
        )


def downgrade() -> None:
    op.drop_table("notification_runs")
    op.drop_table("notification_settings")
    op.drop_table("notifications")
    op.execute(
        "DELETE FROM notification_preferences WHERE topic NOT IN "
        f"({', '.join(repr(t) for t in OLD_TOPICS)})"
    )
    _topics_check(OLD_TOPICS)
