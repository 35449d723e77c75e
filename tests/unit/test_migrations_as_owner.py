"""Migrations 0009 and 0010 upgrade a PostgreSQL database whose owner is an ordinary role, as
production runs (no superuser, no BYPASSRLS: row-level security binds the owner too).

Invoices written before the upgrade are counted in the tallies and found by the search, and the
application's role, granted on the tables that existed before, can still write invoices (the
tallies' triggers write as it).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from portal import migrate
from tests.conftest import POSTGRES_ADMIN_URL
from tests.unit.test_invoice_search_migration import ROWS


@dataclass(frozen=True)
class Owned:
    owner_url: str  # acting as the database's owner (who runs the migrations)
    app_url: str  # acting as the application's role
    app_role: str


@pytest.fixture
def owned_database() -> Iterator[Owned]:
    """A database owned by an ordinary role, and an application role beside it."""
    tag = secrets.token_hex(4)
    owner, app, name = f"owner_{tag}", f"app_{tag}", f"owned_{tag}"
    admin_url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+psycopg")
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect():
            pass
    except Exception as error:
        pytest.skip(f"PostgreSQL is not reachable at {admin_url.render_as_string()}: {error}")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE ROLE {owner} NOLOGIN NOSUPERUSER NOBYPASSRLS"))
        connection.execute(text(f"CREATE ROLE {app} NOLOGIN NOSUPERUSER NOBYPASSRLS"))
        connection.execute(text(f"GRANT {app} TO {owner}"))
        connection.execute(text(f'CREATE DATABASE "{name}" OWNER {owner}'))
    base = admin_url.set(database=name)
    try:
        schema = create_engine(base, isolation_level="AUTOCOMMIT")
        with schema.connect() as connection:
            connection.execute(text(f"ALTER SCHEMA public OWNER TO {owner}"))
        schema.dispose()
        as_owner = base.update_query_dict({"options": f"-c role={owner}"})
        as_app = base.update_query_dict({"options": f"-c role={app}"})
        yield Owned(
            as_owner.render_as_string(hide_password=False),
            as_app.render_as_string(hide_password=False),
            app,
        )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f"DROP ROLE IF EXISTS {app}"))
            connection.execute(text(f"DROP ROLE IF EXISTS {owner}"))
        admin.dispose()


def _system_rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.begin() as connection:
        connection.execute(text("SELECT set_config('app.system', 'on', true)"))
        return [tuple(row) for row in connection.execute(text(sql))]


def test_an_owner_without_superuser_upgrades_with_the_invoices_already_there(
    owned_database: Owned,
) -> None:
    config = migrate.alembic_config(owned_database.owner_url)
    command.upgrade(config, "0008")
    owner = create_engine(owned_database.owner_url)
    role = owned_database.app_role
    with owner.begin() as connection:
        connection.execute(text("SELECT set_config('app.system', 'on', true)"))
        for statement in ROWS:
            connection.execute(text(statement))
        # What docs/operations.md asks of the app's role: the tables there are now.
        connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        connection.execute(
            text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        )
        connection.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    command.upgrade(config, "head")

    tallies = _system_rows(
        owner, "SELECT status, invoice_count, balance FROM invoice_tallies ORDER BY status"
    )
    assert tallies == [("open", 1, 1)]
    (search_text,) = _system_rows(owner, "SELECT search_text FROM invoices")[0]
    assert "OLD-0042" in str(search_text) and "PO-Legacy" in str(search_text)

    # The application's role pays the invoice: the tallies' triggers write as it.
    app = create_engine(owned_database.app_url)
    with app.begin() as connection:
        connection.execute(text("SELECT set_config('app.system', 'on', true)"))
        connection.execute(text("UPDATE invoices SET amount_paid = total, status = 'paid'"))
    assert _system_rows(
        owner, "SELECT status, invoice_count, balance FROM invoice_tallies ORDER BY status"
    ) == [("paid", 1, 0)]
    app.dispose()
    owner.dispose()
