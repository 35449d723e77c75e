"""The last-admin guard under concurrency: two administrators demoting each other at the same
moment leave one. PostgreSQL, on a database of its own with committed rows (the shared test
transaction would serialize everything): the guard locks the company's active administrator
rows (SELECT … FOR UPDATE), so the second demotion waits for the first and then sees it.
(SQLite serializes writers with BEGIN IMMEDIATE; tests/web/test_users.py covers the guard.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select, update

from portal import tenancy
from portal.db import unit_of_work
from portal.models import PortalUser, Role, UserStatus
from portal.services import audit, users
from tests.conftest import Backend, _postgres_database, make_app, migrate_and_seed


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    urls = _postgres_database()
    url = next(urls)
    storage: Path = tmp_path_factory.mktemp("users-concurrency-files")
    migrate_and_seed(url, storage, date.today())
    app = make_app(Backend("postgresql", url, date.today(), storage))
    yield app
    app.extensions["portal.db"].engine.dispose()
    for _ in urls:
        pass


def _active_admins(app: Flask) -> list[str]:
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        return list(
            session.scalars(
                select(PortalUser.email).where(
                    PortalUser.email.like("%@acme.test"),
                    PortalUser.role == Role.ADMIN,
                    PortalUser.status == UserStatus.ACTIVE,
                )
            )
        )


def _race(app: Flask, action: str) -> list[object]:
    """admin@ demotes (or deactivates) ap@ while ap@ does the same to admin@, both having
    loaded their target before either writes."""
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        session.execute(
            update(PortalUser)
            .where(PortalUser.email.in_(["admin@acme.test", "ap@acme.test"]))
            .values(role=Role.ADMIN, status=UserStatus.ACTIVE)
        )
        session.commit()
    assert sorted(_active_admins(app)) == ["admin@acme.test", "ap@acme.test"]
    loaded = threading.Barrier(2, timeout=10)
    outcomes: list[object] = []

    def run(actor_email: str, target_email: str) -> None:
        with (
            app.app_context(),
            unit_of_work(writes=True),
            app.extensions["portal.db"].sessionmaker() as session,
        ):
            with tenancy.system(session):
                actor = session.scalars(
                    select(PortalUser).where(PortalUser.email == actor_email)
                ).one()
                target = session.scalars(
                    select(PortalUser).where(PortalUser.email == target_email)
                ).one()
                _ = target.grants
            tenancy.bind(session, tenancy.scope_for_user(actor))
            loaded.wait()  # both have read their target: now both write at once
            request = audit.RequestInfo(user_agent="race")
            if action == "demote":
                outcome = users.change_access(
                    session, actor, target, Role.CUSTOMER, [], request=request
                )
            else:
                now = app.extensions["portal.clock"].now()
                outcome = users.deactivate(session, actor, target, now=now, request=request)
            session.commit()
            outcomes.append(outcome)

    threads = [
        threading.Thread(target=run, args=("admin@acme.test", "ap@acme.test")),
        threading.Thread(target=run, args=("ap@acme.test", "admin@acme.test")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


@pytest.mark.parametrize("action", ["demote", "deactivate"])
def test_two_admins_demoting_each_other_at_once_leave_one(pg_app: Flask, action: str) -> None:
    outcomes = _race(pg_app, action)
    assert sorted(map(str, outcomes)) == ["None", str(users.Refusal.LAST_ADMIN)]
    assert len(_active_admins(pg_app)) == 1
