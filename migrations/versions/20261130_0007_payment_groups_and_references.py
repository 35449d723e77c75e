"""payment groups and payment references: several accounts paid in one go, one human reference
per payment from the moment it exists

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

- `payment_groups`: one row per submit that pays invoices of several billing accounts; it holds
  the form's idempotency key, and each of its payments (one per account) a key derived from it.
- `payments.reference` ("PMT-7K3D-XQ4M", see portal.models.payment.new_reference) replaces
  `receipt_number`: every payment gets one when it is made (scheduled, processing and failed
  ones too), and a succeeded payment's receipt carries it. Existing payments get one here; an
  earlier receipt number (RCPT-…) is kept in the audit log, as a `Portal.PaymentReferenceAssigned`
  event naming the payment, its new reference and `previous_receipt_number`, so a receipt
  issued before can still be traced.
- `payments.billing_account_id` becomes NOT NULL: a payment covers one account (no code path ever
  made one without).
- The append-only triggers now freeze a payment's reference and group too.

SQLite cannot alter these columns in place, so `payments` is rebuilt by hand: its rows are
parked in a holder table, the table is dropped and created anew, the rows come back. (Alembic's
batch mode copies, drops and renames instead; with foreign keys on, which a transaction cannot
switch off, SQLite then counts every payment allocation as orphaned and refuses the commit.
Rows inserted into the re-created table itself satisfy the deferred checks again.)
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNLESS_OVERRIDE = "NOT EXISTS (SELECT 1 FROM append_only_overrides)"
FROZEN_BEFORE = ("amount", "currency", "idempotency_key", "company_id", "created_at")
FROZEN_AFTER = (*FROZEN_BEFORE, "reference", "group_id")
STATUSES = ("pending", "scheduled", "processing", "succeeded", "failed", "canceled")
# The same format as portal.models.payment.new_reference (copied: a migration must not change
# when the application's code does).
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _new_reference() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(7))
    total = 0
    for position, char in enumerate(reversed(body)):
        value = ALPHABET.index(char) * (2 if position % 2 == 0 else 1)
        total += value // len(ALPHABET) + value % len(ALPHABET)
    code = body + ALPHABET[(len(ALPHABET) - total % len(ALPHABET)) % len(ALPHABET)]
    return f"PMT-{code[:4]}-{code[4:]}"


def _common_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=80), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("payment_method_id", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(*STATUSES, name="payment_status", native_enum=False, create_constraint=True,
                    length=32),
            nullable=False,
        ),  # fmt: skip
        sa.Column("scheduled_for", sa.Date(), nullable=True),
        sa.Column("gateway", sa.String(length=20), nullable=False),
        sa.Column("gateway_reference", sa.String(length=120), nullable=True),
        sa.Column("failure_code", sa.String(length=60), nullable=True),
        sa.Column("failure_message", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("action_url", sa.String(length=500), nullable=True),
        sa.Column("charging_since", sa.DateTime(timezone=True), nullable=True),
    ]


def _common_constraints() -> list[sa.Constraint]:
    return [
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_amount_positive")),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_payments_currency_iso")),
        sa.ForeignKeyConstraint(
            ["billing_account_id"], ["billing_accounts.id"],
            name=op.f("fk_payments_billing_account_id_billing_accounts"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_payments_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["payment_method_id"], ["payment_methods.id"],
            name=op.f("fk_payments_payment_method_id_payment_methods"), ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["portal_users.id"], name=op.f("fk_payments_user_id_portal_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("gateway_reference", name=op.f("uq_payments_gateway_reference")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payments_idempotency_key")),
        sa.UniqueConstraint("public_id", name=op.f("uq_payments_public_id")),
    ]  # fmt: skip


INDEXES = (
    ("ix_payments_billing_account_id", ["billing_account_id"]),
    ("ix_payments_company_created", ["company_id", "created_at"]),
    ("ix_payments_company_id", ["company_id"]),
    ("ix_payments_status_scheduled", ["status", "scheduled_for"]),
)


def _new_shape() -> tuple[list[sa.Column[object]], list[sa.Constraint]]:
    columns = [
        *_common_columns(),
        sa.Column("billing_account_id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=20), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
    ]
    constraints = [
        *_common_constraints(),
        sa.UniqueConstraint("reference", name=op.f("uq_payments_reference")),
        sa.ForeignKeyConstraint(
            ["group_id"], ["payment_groups.id"], name=op.f("fk_payments_group_id_payment_groups"),
            ondelete="RESTRICT",
        ),
    ]  # fmt: skip
    return columns, constraints


def _old_shape() -> tuple[list[sa.Column[object]], list[sa.Constraint]]:
    columns = [
        *_common_columns(),
        sa.Column("billing_account_id", sa.Integer(), nullable=True),
        sa.Column("receipt_number", sa.String(length=40), nullable=True),
    ]
    constraints = [
        *_common_constraints(),
        sa.UniqueConstraint("receipt_number", name=op.f("uq_payments_receipt_number")),
    ]
    return columns, constraints


def _rebuild_sqlite(
    shape: tuple[list[sa.Column[object]], list[sa.Constraint]],
    copied: dict[str, str],
    indexes: Sequence[tuple[str, list[str]]],
) -> None:
    """Re-create `payments` in `shape`; `copied` maps each new column to an expression over the
    old row. Deferred foreign keys let the allocations wait for their payments to come back."""
    op.execute("PRAGMA defer_foreign_keys = ON")
    op.execute("DROP TABLE IF EXISTS payments_0007_holder")
    op.execute("CREATE TABLE payments_0007_holder AS SELECT * FROM payments")
    op.execute("DROP TABLE payments")  # its indexes and triggers go with it
    columns, constraints = shape
    op.create_table("payments", *columns, *constraints)
    targets = ", ".join(copied)
    sources = ", ".join(copied.values())
    op.execute(
        f"INSERT INTO payments ({targets}) SELECT {sources} FROM payments_0007_holder ORDER BY id"
    )
    op.execute("DROP TABLE payments_0007_holder")
    for name, names in indexes:
        op.create_index(name, "payments", names, unique=False)


def _sqlite_triggers(frozen: Sequence[str]) -> None:
    op.execute("DROP TRIGGER IF EXISTS payments_no_delete")
    op.execute("DROP TRIGGER IF EXISTS payments_frozen_columns")
    op.execute(
        "CREATE TRIGGER payments_no_delete BEFORE DELETE ON payments "
        f"WHEN {UNLESS_OVERRIDE} "
        "BEGIN SELECT RAISE(ABORT, 'payments is append-only'); END"
    )
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in frozen)
    op.execute(
        "CREATE TRIGGER payments_frozen_columns BEFORE UPDATE ON payments "
        f"WHEN ({changed}) AND {UNLESS_OVERRIDE} "
        "BEGIN SELECT RAISE(ABORT, 'a payment''s amount, currency and key never change'); END"
    )


def _postgresql_frozen(frozen: Sequence[str]) -> None:
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in frozen)
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION portal_payment_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF ({changed}) AND {UNLESS_OVERRIDE} THEN
            RAISE EXCEPTION 'a payment''s amount, currency and key never change'
              USING ERRCODE = 'P0001';
          END IF;
          RETURN NEW;
        END $$;
        """
    )


def _give_references() -> None:
    """A reference for every existing payment (row-level security: this is a system task); an
    earlier receipt number goes to the audit log beside the reference that replaces it."""
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    if postgresql:
        bind.execute(sa.text("SELECT set_config('app.system', 'on', true)"))
    rows = bind.execute(
        sa.text("SELECT id, public_id, company_id, receipt_number FROM payments ORDER BY id")
    ).all()
    now = datetime.now(UTC) if postgresql else datetime.now(UTC).replace(tzinfo=None)
    given: set[str] = set()
    events = []
    for payment_id, public_id, company_id, receipt_number in rows:
        reference = _new_reference()
        while reference in given:
            reference = _new_reference()
        given.add(reference)
        bind.execute(
            sa.text("UPDATE payments SET reference = :reference WHERE id = :id"),
            {"reference": reference, "id": payment_id},
        )
        if receipt_number:
            events.append(
                {
                    "company_id": company_id,
                    "name": "Portal.PaymentReferenceAssigned",
                    "properties": {
                        "payment_id": public_id,
                        "reference": reference,
                        "previous_receipt_number": receipt_number,
                    },
                    "ip_address": "",
                    "user_agent": "",
                    "created_at": now,
                }
            )
    if events:
        audit = sa.table(
            "audit_events",
            sa.column("company_id", sa.Integer()),
            sa.column("name", sa.String()),
            sa.column("properties", sa.JSON()),
            sa.column("ip_address", sa.String()),
            sa.column("user_agent", sa.String()),
            sa.column("created_at", sa.DateTime(timezone=postgresql)),
        )
        op.bulk_insert(audit, events)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "payment_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=80), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_payment_groups_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["portal_users.id"], name=op.f("fk_payment_groups_user_id_portal_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_groups")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payment_groups_idempotency_key")),
        sa.UniqueConstraint("public_id", name=op.f("uq_payment_groups_public_id")),
    )  # fmt: skip
    op.create_index("ix_payment_groups_company_id", "payment_groups", ["company_id"])
    op.add_column("payments", sa.Column("reference", sa.String(length=20), nullable=True))
    _give_references()
    if postgresql:
        op.drop_constraint("uq_payments_receipt_number", "payments", type_="unique")
        op.drop_column("payments", "receipt_number")
        op.alter_column("payments", "reference", nullable=False)
        op.create_unique_constraint("uq_payments_reference", "payments", ["reference"])
        op.alter_column("payments", "billing_account_id", nullable=False)
        op.add_column("payments", sa.Column("group_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            "fk_payments_group_id_payment_groups", "payments", "payment_groups",
            ["group_id"], ["id"], ondelete="RESTRICT",
        )  # fmt: skip
        _postgresql_frozen(FROZEN_AFTER)
        rule = (
            "(current_setting('app.system', true) = 'on' OR "
            "company_id = NULLIF(current_setting('app.company_id', true), '')::integer)"
        )
        op.execute("ALTER TABLE payment_groups ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE payment_groups FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON payment_groups USING {rule} WITH CHECK {rule}"
        )
    else:
        columns, _constraints = _new_shape()
        copied = {c.name: c.name for c in columns}
        copied["group_id"] = "NULL"
        _rebuild_sqlite(_new_shape(), copied, INDEXES)
        _sqlite_triggers(FROZEN_AFTER)
    op.create_index("ix_payments_group_id", "payments", ["group_id"])


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.drop_index("ix_payments_group_id", table_name="payments")
    if postgresql:
        op.execute("DROP POLICY tenant_isolation ON payment_groups")
        _postgresql_frozen(FROZEN_BEFORE)
        op.drop_constraint("fk_payments_group_id_payment_groups", "payments", type_="foreignkey")
        op.drop_column("payments", "group_id")
        op.alter_column("payments", "billing_account_id", nullable=True)
        op.add_column(
            "payments", sa.Column("receipt_number", sa.String(length=40), nullable=True)
        )
        op.execute(
            "UPDATE payments SET receipt_number = reference WHERE status = 'succeeded'"
        )
        op.create_unique_constraint(
            "uq_payments_receipt_number", "payments", ["receipt_number"]
        )
        op.drop_constraint("uq_payments_reference", "payments", type_="unique")
        op.drop_column("payments", "reference")
    else:
        columns, _constraints = _old_shape()
        copied = {c.name: c.name for c in columns}
        copied["receipt_number"] = (
            "CASE WHEN status = 'succeeded' THEN reference ELSE NULL END"
        )
        _rebuild_sqlite(_old_shape(), copied, INDEXES)
        _sqlite_triggers(FROZEN_BEFORE)
    op.drop_index("ix_payment_groups_company_id", table_name="payment_groups")
    op.drop_table("payment_groups")
