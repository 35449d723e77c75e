"""The receivables feed's hard property on PostgreSQL, with committed rows: a row with a lower
id may commit after one with a higher id, yet a reader paging meanwhile gets every event exactly
once, across pages, concurrent writers and a restart (a new app continuing from a saved
cursor). SQLite serializes writers, so its id order is the commit order (test_ar_events.py)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import unit_of_work
from portal.gateways import ChargeResult, ChargeStatus
from portal.models import ArEvent, Company, Invoice, InvoiceStatus, PaymentStatus
from portal.services import api_tokens, ar_events
from portal.services.payments import transitions
from tests.conftest import Backend, committed_postgres_app, make_app
from tests.factories import make_payment

PATH = "/api/ar/events"


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    yield from committed_postgres_app(tmp_path_factory, "ar-events-files")


@pytest.fixture(scope="module")
def key(pg_app: Flask) -> dict[str, str]:
    with pg_app.app_context(), _session(pg_app) as session:
        _key, raw = api_tokens.create_key(session, name="feed-test", now=_now(pg_app))
        session.commit()
    return {"Authorization": f"Bearer {raw}"}


def _now(app: Flask) -> Any:
    return app.extensions["portal.clock"].now()


def _session(app: Flask) -> Session:
    session: Session = app.extensions["portal.db"].sessionmaker()
    return session


def _company_id(session: Session) -> int:
    with tenancy.system(session):
        return session.scalars(select(Company.id).order_by(Company.id)).first() or 0


def _write(session: Session, label: str) -> int:
    with tenancy.system(session):
        event = ar_events.record(session, _company_id(session), "test.race", label, {})
        return event.id


def _drain(
    client: FlaskClient, headers: dict[str, str], after: str | None
) -> tuple[list[str], str]:
    """Every page from `after` until an empty one: the event ids, and the cursor to keep."""
    seen: list[str] = []
    for _ in range(10_000):
        query: dict[str, Any] = {"limit": 2} | ({"after": after} if after else {})
        response = client.get(PATH, query_string=query, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        after = body["next_cursor"]
        if not body["events"]:
            return seen, after or ""
        seen.extend(e["id"] for e in body["events"])
    raise AssertionError("the feed never ended")


def _until(
    client: FlaskClient, headers: dict[str, str], after: str, count: int
) -> tuple[list[str], str]:
    """Page on until `count` events came (transaction ids are cluster-wide: another
    database's open transaction on a shared server holds the horizon back a while)."""
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while len(seen) < count and time.monotonic() < deadline:
        found, after = _drain(client, headers, after)
        seen.extend(found)
        if len(seen) < count:
            time.sleep(0.05)
    return seen, after


@pytest.mark.parametrize("lower_id_is_older_tx", [True, False])
def test_a_later_id_committed_first_is_handed_out_once(
    pg_app: Flask, key: dict[str, str], lower_id_is_older_tx: bool
) -> None:
    client = pg_app.test_client()
    _before, cursor = _drain(client, key, None)
    with pg_app.app_context(), _session(pg_app) as slow, _session(pg_app) as fast:
        if lower_id_is_older_tx:
            # The slow writer inserts first: lower id, older transaction.
            slow_id = _write(slow, "slow")
            fast_id = _write(fast, "fast")
        else:
            # The slow writer's transaction is older (it has written before) but its event
            # comes later: a higher id, an older txid.
            slow.execute(text("SELECT pg_current_xact_id()"))
            fast_id = _write(fast, "fast")
            slow_id = _write(slow, "slow")
        fast.commit()  # the other one's rows are still invisible: it must not be skipped
        meanwhile, cursor = _drain(client, key, cursor)
        assert str(fast_id) not in meanwhile and str(slow_id) not in meanwhile
        slow.commit()
    after, cursor = _until(client, key, cursor, 2)
    assert _drain(client, key, cursor)[0] == []
    assert sorted(after) == sorted([str(slow_id), str(fast_id)])
    assert after[0] == str(slow_id)  # the older transaction first, whatever its id


def test_a_new_app_continues_from_a_saved_cursor(
    pg_app: Flask, key: dict[str, str], tmp_path: Path
) -> None:
    client = pg_app.test_client()
    _before, cursor = _drain(client, key, None)
    with pg_app.app_context(), _session(pg_app) as session:
        first = [_write(session, f"first-{i}") for i in range(5)]
        session.commit()
    seen, cursor = _until(client, key, cursor, len(first))
    assert seen == [str(i) for i in first]
    # The reader stops; more happens; a new app (a restart) goes on from the saved cursor.
    with pg_app.app_context(), _session(pg_app) as session:
        second = [_write(session, f"second-{i}") for i in range(5)]
        session.commit()
    url = pg_app.config["SETTINGS"].database_url
    restarted = make_app(Backend("postgresql", url, date.today(), tmp_path))
    try:
        rest, _cursor = _until(restarted.test_client(), key, cursor, len(second))
    finally:
        restarted.extensions["portal.db"].engine.dispose()
    assert rest == [str(i) for i in second]


def test_each_payment_made_appears_exactly_once_while_a_reader_pages(
    pg_app: Flask, key: dict[str, str]
) -> None:
    client = pg_app.test_client()
    _before, cursor = _drain(client, key, None)
    with pg_app.app_context(), _session(pg_app) as session, tenancy.system(session):
        invoices = session.scalars(
            select(Invoice)
            .where(Invoice.status == InvoiceStatus.OPEN, Invoice.balance_due > 0)
            .order_by(Invoice.id)
            .limit(6)
        ).all()
        assert len(invoices) == 6
        payments = [make_payment(session, i, status=PaymentStatus.PROCESSING) for i in invoices]
        session.commit()
        payment_ids = [(p.id, p.public_id) for p in payments]

    errors: list[BaseException] = []
    writers_done = threading.Event()
    rng = random.Random(7)
    pauses = [rng.uniform(0, 0.05) for _ in payment_ids]

    def pay(index: int, payment_id: int) -> None:
        try:
            with (
                pg_app.app_context(),
                unit_of_work(writes=True),
                _session(pg_app) as session,
                tenancy.system(session),
            ):
                from portal.models import Payment

                payment = session.get(Payment, payment_id)
                assert payment is not None
                result = ChargeResult(ChargeStatus.SUCCEEDED, payment.gateway_reference)
                session.execute(text("SELECT pg_current_xact_id()"))
                time.sleep(pauses[index])
                transitions.apply_result(session, payment, result, now=_now(pg_app))
                time.sleep(pauses[-1 - index])  # hold the transaction open a while
                session.commit()
        except BaseException as error:  # the test says what it was
            errors.append(error)

    seen: list[str] = []

    def read() -> None:
        nonlocal cursor
        reader = pg_app.test_client()
        try:
            while not writers_done.is_set():
                found, cursor = _drain(reader, key, cursor)
                seen.extend(found)
            # Only the payments write events meanwhile: page on until each has come.
            found, cursor = _until(reader, key, cursor, len(payment_ids) - len(seen))
            seen.extend(found)
            seen.extend(_drain(reader, key, cursor)[0])
        except BaseException as error:
            errors.append(error)

    reader_thread = threading.Thread(target=read)
    reader_thread.start()
    writers = [threading.Thread(target=pay, args=(i, p[0])) for i, p in enumerate(payment_ids)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(30)
    writers_done.set()
    reader_thread.join(30)
    assert not errors, errors
    assert len(seen) == len(set(seen)), "an event was handed out twice"
    with pg_app.app_context(), _session(pg_app) as session, tenancy.system(session):
        events = session.scalars(
            select(ArEvent).where(ArEvent.id.in_([int(i) for i in seen]))
        ).all()
    paid = [e.subject_id for e in events if e.kind == ar_events.PAYMENT_SUCCEEDED]
    assert sorted(paid) == sorted(public_id for _id, public_id in payment_ids)
