"""PostgreSQL row-level security, seen by an ordinary role (superusers bypass it).

This runs on its own PostgreSQL database, whatever PORTAL_TEST_BACKENDS says: the wall exists
only there. The app connects as role `portal_app` through the URL's libpq options.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import make_engine
from portal.models import Company, Invoice
from tests.conftest import (
    Auth,
    Backend,
    _postgres_database,
    make_app,
    migrate_and_seed,
)

ROLE = "portal_app"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    urls = _postgres_database()
    url = next(urls)
    migrate_and_seed(url, tmp_path_factory.mktemp("rls-files"), date.today())
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                f"DO $$ BEGIN CREATE ROLE {ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            )
        )
        connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {ROLE}"))
        connection.execute(
            text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ROLE}")
        )
        connection.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {ROLE}"))
    engine.dispose()
    as_app = make_url(url).update_query_dict({"options": f"-c role={ROLE}"})
    yield as_app.render_as_string(hide_password=False)
    for _ in urls:
        pass


def test_raw_sql_sees_only_the_company_the_transaction_names(app_url: str) -> None:
    engine = create_engine(make_url(app_url).set(drivername="postgresql+psycopg"))
    with engine.begin() as connection:
        assert connection.scalar(text("SELECT current_user")) == ROLE
        assert connection.scalar(text("SELECT count(*) FROM invoices")) == 0  # nothing named
        connection.execute(text("SELECT set_config('app.system', 'on', true)"))
        companies = dict(connection.execute(text("SELECT name, id FROM companies")).all())
        total = connection.scalar(text("SELECT count(*) FROM invoices"))
        connection.execute(text("SELECT set_config('app.system', '', true)"))
        connection.execute(
            text("SELECT set_config('app.company_id', :c, true)"),
            {"c": str(companies["Globex GmbH"])},
        )
        numbers = connection.scalars(text("SELECT number FROM invoices")).all()
        assert numbers and all(n.startswith("RE-") for n in numbers) and len(numbers) < total
        assert connection.scalar(text("SELECT count(*) FROM companies")) == 1
        with (
            pytest.raises(DBAPIError, match="row-level security"),
            connection.begin_nested(),
        ):
            connection.execute(
                text("UPDATE invoices SET company_id = :other"),
                {"other": companies["Acme Corp"]},
            )
    engine.dispose()


def test_the_portal_works_as_an_ordinary_role_and_raw_sql_stays_inside(
    app_url: str, tmp_path: Path
) -> None:
    backend = Backend("postgresql", app_url, date.today(), tmp_path)
    app = make_app(backend)
    client = app.test_client()
    Auth(app, client).sign_in("admin@globex.test")
    page = client.get("/portal/dashboard").get_data(as_text=True)
    assert "Willkommen" in page or "Welcome, Globex GmbH" in page
    assert client.get("/portal/invoices").status_code == 200
    with app.app_context():
        session: Session = app.extensions["portal.db"].sessionmaker()
        with tenancy.system(session):
            globex = session.scalars(select(Company.id).where(Company.name == "Globex GmbH")).one()
        tenancy.bind(session, tenancy.Scope(globex))
        # Raw SQL skips the ORM filter: the database still shows Globex only.
        numbers = session.scalars(text("SELECT number FROM invoices")).all()
        assert numbers and all(n.startswith("RE-") for n in numbers)
        assert session.scalar(select(func.count(Invoice.id))) == len(numbers)
        session.close()
    app.extensions["portal.db"].engine.dispose()
