"""Run the Alembic migrations from code (CLI, tests, `make run`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from sqlalchemy import Connection

from portal.config import PROJECT_ROOT
from portal.services.invoice_search import OUTSIDE_THE_MODELS


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    config = Config(str(Path(PROJECT_ROOT) / "alembic.ini"))
    config.set_main_option("script_location", str(Path(PROJECT_ROOT) / "migrations"))
    config.attributes["configure_logger"] = False
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """What comparing the database with the models looks at: all but the search's text index
    (an FTS5 table on SQLite, trigram indexes on PostgreSQL), which no model declares."""
    return name not in OUTSIDE_THE_MODELS


def upgrade(url: str | None = None, connection: Connection | None = None) -> None:
    command.upgrade(alembic_config(url, connection), "head")


def downgrade(revision: str, url: str | None = None, connection: Connection | None = None) -> None:
    """Back to `revision` (its id, or "-1" for one step): operators' last resort when a
    migration itself is at fault (docs/operations.md, Rollback)."""
    command.downgrade(alembic_config(url, connection), revision)
