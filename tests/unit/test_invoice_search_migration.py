"""Migration 0009 fills the search's text index from the invoices already there, and goes back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.orm import Session

from portal import migrate, tenancy
from portal.db import make_engine
from portal.models import Invoice
from portal.services import invoice_search
from tests.conftest import BACKENDS, _postgres_database

ROWS = [
    "INSERT INTO companies (public_id, name, currency, locale, credit_limit,"
    " allow_partial_payments, created_at)"
    " VALUES ('co_mig9', 'Before 0009', 'USD', 'en_US', 0, true, CURRENT_TIMESTAMP)",
    "INSERT INTO billing_accounts (public_id, company_id, name, number, bill_to, created_at)"
    " SELECT 'ba_mig9', id, 'Main', 'A-1', '', CURRENT_TIMESTAMP FROM companies",
    "INSERT INTO invoices (public_id, company_id, billing_account_id, number, reference,"
    " issue_date, due_date, currency, subtotal, tax_total, total, amount_paid, status, notes,"
    " version, created_at, updated_at)"
    " SELECT 'inv_mig9', company_id, id, 'OLD-0042', 'PO-Legacy', '2026-01-01', '2026-02-01',"
    " 'USD', 1, 0, 1, 0, 'open', '', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP"
    " FROM billing_accounts",
    "INSERT INTO invoice_lines (company_id, billing_account_id, invoice_id, position,"
    " description, quantity, unit_price, tax_rate_bp, amount)"
    " SELECT company_id, billing_account_id, id, 1, 'Backfilled hosting', 1, 1, 0, 1"
    " FROM invoices",
]


@contextmanager
def _database(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'migration.db'}"
        return
    databases = _postgres_database()
    try:
        yield next(databases)
    finally:
        databases.close()


def _found(engine: Engine, q: str) -> list[str]:
    with Session(engine) as session, tenancy.system(session):
        return list(session.scalars(select(Invoice.number).where(invoice_search.matching(q))))


def _text_index(engine: Engine) -> set[str]:
    names = set(inspect(engine).get_table_names())
    names |= {i["name"] or "" for i in inspect(engine).get_indexes("invoices")}
    names |= {i["name"] or "" for i in inspect(engine).get_indexes("invoice_lines")}
    return names & invoice_search.OUTSIDE_THE_MODELS


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_fills_the_index_and_downgrade_removes_it(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path) as url:
        config = migrate.alembic_config(url)
        command.upgrade(config, "0008")
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                if backend == "postgresql":
                    connection.execute(text("SET LOCAL app.system = 'on'"))
                for statement in ROWS:
                    connection.execute(text(statement))
            assert _text_index(engine) == set()

            command.upgrade(config, "head")
            assert _text_index(engine)
            for q in ("old-0042", "LEGACY", "backfilled host"):
                assert _found(engine, q) == ["OLD-0042"], q

            command.downgrade(config, "0008")
            assert _text_index(engine) == set()
            command.upgrade(config, "head")
            assert _found(engine, "hosting") == ["OLD-0042"]
        finally:
            engine.dispose()
