"""Autopay turned on twice at once (a double-clicked "Turn on", two admins), on PostgreSQL with
committed rows: the second waits for the first's new setting and changes it, never a 500."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import unit_of_work
from portal.models import AutopaySetting, BillingAccount, PaymentMethod, PortalUser
from portal.services import audit, autopay
from tests.conftest import committed_postgres_app


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    yield from committed_postgres_app(tmp_path_factory, "autopay-concurrency-files")


def _turn_on(app: Flask, first_done: threading.Event, *, first: bool) -> Any:
    clock = app.extensions["portal.clock"]
    with app.app_context(), unit_of_work(writes=True):
        session: Session = app.extensions["portal.db"].sessionmaker()
        with session, tenancy.system(session):
            user = session.scalars(
                select(PortalUser).where(PortalUser.email == "admin@acme.test")
            ).one()
            account = session.scalars(
                select(BillingAccount).where(BillingAccount.name == "Acme West")
            ).one()
            method = session.scalars(
                select(PaymentMethod).where(
                    PaymentMethod.last4 == "4242", PaymentMethod.removed_at.is_(None)
                )
            ).first()
            if not first:
                first_done.wait(10)  # the first has written its setting, not committed it
            outcome = autopay.turn_on(
                session,
                user,
                account,
                autopay.Choice(method, "due_date", "0", "3" if first else "7"),
                today=clock.today(),
                now=clock.now(),
                gateway_name="sandbox",
                request=audit.RequestInfo(user_agent="race"),
            )
            if first:
                first_done.set()
                time.sleep(0.5)  # the second reads, then waits on the first's row
            session.commit()
            return outcome if isinstance(outcome, autopay.Refusal) else outcome.notice_days


def test_turned_on_twice_at_once_the_second_changes_the_first(pg_app: Flask) -> None:
    first_done = threading.Event()
    outcomes: list[Any] = [None, None]

    def run(index: int) -> None:
        try:
            outcomes[index] = _turn_on(pg_app, first_done, first=index == 0)
        except Exception as error:  # the assertion says what it was
            outcomes[index] = error
            first_done.set()

    threads = [threading.Thread(target=run, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == [3, 7], outcomes
    session: Session = pg_app.extensions["portal.db"].sessionmaker()
    with session, tenancy.system(session):
        assert session.scalar(select(func.count(AutopaySetting.id))) == 1
        assert session.scalars(select(AutopaySetting.notice_days)).one() == 7
