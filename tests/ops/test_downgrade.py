"""`flask --app wsgi db downgrade REVISION` (Rollback, docs/operations.md): undoes the
migrations after REVISION once confirmed, and `db upgrade` brings them back; refused, it
changes nothing. On a database of its own per backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import create_engine, inspect, text

from portal import create_app, migrate
from tests.conftest import TEST_SECRET, _postgres_database

_HEAD = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
assert _HEAD
_PREVIOUS = ScriptDirectory.from_config(migrate.alembic_config()).get_revision(_HEAD)
LATEST, PREVIOUS = _HEAD, str(_PREVIOUS.down_revision)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """An app on an empty database of the test's own."""
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'portal.db'}"])
    else:
        urls = _postgres_database()
    url = next(urls)
    app = create_app({"env": "testing", "secret_key": TEST_SECRET, "database_url": url})
    yield app
    app.extensions["portal.db"].engine.dispose()
    for _ in urls:
        pass


def state(app: Flask) -> tuple[str, frozenset[tuple[str, str]]]:
    """The database's revision, and its tables' columns, indexes and checks."""
    engine = create_engine(app.extensions["portal.db"].engine.url)
    try:
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            schema = inspect(connection)
            tables = schema.get_table_names()
            columns = (
                frozenset(
                    (table, column["name"])
                    for table in tables
                    for column in schema.get_columns(table)
                )
                | frozenset(
                    (table, f"index {index['name']}")
                    for table in tables
                    for index in schema.get_indexes(table)
                )
                | frozenset(
                    (table, f"check {check['name']}: {check['sqltext']}")
                    for table in tables
                    for check in schema.get_check_constraints(table)
                )
            )
    finally:
        engine.dispose()
    return str(version), columns


def test_downgrade_undoes_the_later_migrations_and_upgrade_brings_them_back(
    fresh: Flask,
) -> None:
    cli = fresh.test_cli_runner()
    assert cli.invoke(args=["db", "upgrade"]).exit_code == 0
    latest = state(fresh)
    assert latest[0] == LATEST

    refused = cli.invoke(args=["db", "downgrade", PREVIOUS], input="n\n")
    assert refused.exit_code != 0 and "What they added is dropped" in refused.output
    assert state(fresh) == latest  # nothing changed

    done = cli.invoke(args=["db", "downgrade", PREVIOUS, "--yes"])
    assert done.exit_code == 0, done.output
    assert f"database downgraded to {PREVIOUS}" in done.output
    previous = state(fresh)
    assert previous[0] == PREVIOUS and previous[1] != latest[1]  # the last migration undone

    assert cli.invoke(args=["db", "upgrade"]).exit_code == 0
    assert state(fresh) == latest
