"""Security alerts under concurrency, on PostgreSQL with committed rows (the shared test
transaction would serialize everything): alerts recorded at once for one user still keep to the
mail rate limit (the user's row lock orders the count and the insert), so a burst of triggers
at the same moment cannot flood the mailbox past it; one "This wasn't me" pressed twice at once
secures once (no unique-key error, one reset mail)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import unit_of_work
from portal.models import PortalUser, SecurityAlert
from portal.services import audit
from portal.services import security_alerts as domain
from tests.conftest import committed_postgres_app

AT_ONCE = 6


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    yield from committed_postgres_app(tmp_path_factory, "security-alerts-concurrency-files")


def _user_id(app: Flask, email: str) -> int:
    session: Session = app.extensions["portal.db"].sessionmaker()
    with session, tenancy.system(session):
        return session.scalars(select(PortalUser.id).where(PortalUser.email == email)).one()


def test_alerts_recorded_at_once_keep_to_the_mail_limit(pg_app: Flask) -> None:
    user_id = _user_id(pg_app, "ap@acme.test")
    now = pg_app.extensions["portal.clock"].now()
    started = threading.Barrier(AT_ONCE, timeout=10)
    outcomes: list[Any] = [None] * AT_ONCE

    def run(index: int) -> None:
        try:
            with pg_app.app_context(), unit_of_work(writes=True):
                session: Session = pg_app.extensions["portal.db"].sessionmaker()
                with session, tenancy.system(session):
                    user = session.get(PortalUser, user_id)
                    assert user is not None
                    started.wait()
                    alert = domain.record(
                        session,
                        user,
                        domain.Kind.FAILED_ATTEMPTS,
                        request=audit.RequestInfo("203.0.113.9", "race"),
                        now=now,
                        key=f"race-{index}",
                    )
                    outcomes[index] = alert.mailed if alert is not None else None
                    session.commit()
        except Exception as error:  # the assertion says what it was
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(AT_ONCE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(isinstance(outcome, bool) for outcome in outcomes), outcomes
    assert (
        sorted(outcomes)
        == [False] * (AT_ONCE - domain.MAILS_PER_HOUR) + [True] * domain.MAILS_PER_HOUR
    )
    session: Session = pg_app.extensions["portal.db"].sessionmaker()
    with session, tenancy.system(session):
        mailed = session.scalar(
            select(func.count()).where(
                SecurityAlert.user_id == user_id, SecurityAlert.mailed.is_(True)
            )
        )
    assert mailed == domain.MAILS_PER_HOUR


def test_one_link_pressed_twice_at_once_secures_once(pg_app: Flask) -> None:
    # A double click (or a mail scanner and the owner) on the same "This wasn't me" at once:
    # one secures and asks for one reset mail, the other does nothing.
    user_id = _user_id(pg_app, "admin@acme.test")
    now = pg_app.extensions["portal.clock"].now()
    request = audit.RequestInfo("203.0.113.9", "race")
    session: Session = pg_app.extensions["portal.db"].sessionmaker()
    with pg_app.app_context(), session, tenancy.system(session):
        user = session.get(PortalUser, user_id)
        assert user is not None
        alert = domain.record(session, user, domain.Kind.MFA_RESET, request=request, now=now)
        assert alert is not None
        alert_id = alert.id
        session.commit()
    loaded = threading.Barrier(2, timeout=10)
    outcomes: list[Any] = [None, None]

    def run(index: int) -> None:
        try:
            with pg_app.app_context(), unit_of_work(writes=True):
                session: Session = pg_app.extensions["portal.db"].sessionmaker()
                with session, tenancy.system(session):
                    user = session.get(PortalUser, user_id)
                    alert = session.get(SecurityAlert, alert_id)
                    assert user is not None and alert is not None
                    loaded.wait()
                    outcomes[index] = domain.secure_account(
                        session, user, alert, now=now, request=request
                    )
                    session.commit()
        except Exception as error:  # the assertion says what it was
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes, key=str) == [False, True], outcomes
