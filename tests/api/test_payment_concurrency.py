"""The API's Idempotency-Key under concurrency, on PostgreSQL with committed rows (as
tests/web/test_payment_concurrency.py does for the page): one key sent twenty times at once
makes one payment and one charge; twenty keys for one invoice pay it once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from flask import Flask

from tests.api.conftest import issue_token
from tests.web.test_payment_concurrency import _an_open_invoice, _lookup, _outcome, _visa

COUNT = 20


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    from tests.conftest import committed_postgres_app

    yield from committed_postgres_app(tmp_path_factory, "api-concurrency-files")


def _token(app: Flask) -> str:
    with app.extensions["portal.db"].sessionmaker() as session:
        raw = issue_token(app, session)
        session.commit()
        return raw


def _race(app: Flask, number: str, *, same_key: bool) -> list[tuple[int, list[str]]]:
    public_id, _id, _balance = _lookup(app, number)
    body = {"invoices": [{"id": public_id}], "method_id": _visa(app)}
    headers = {"Authorization": f"Bearer {_token(app)}"}
    barrier = threading.Barrier(COUNT)
    answers: list[tuple[int, list[str]]] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        client = app.test_client()
        key = "same key" if same_key else f"key {n}"
        barrier.wait()
        response = client.post(
            "/api/portal/payment", json=body, headers={**headers, "Idempotency-Key": key}
        )
        made = response.get_json() or {}
        with lock:
            answers.append((response.status_code, [p["id"] for p in made.get("payments", [])]))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(COUNT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def test_one_key_sent_at_once_twenty_times_pays_once(pg_app: Flask) -> None:
    number = _an_open_invoice(pg_app, "640.00")
    answers = _race(pg_app, number, same_key=True)
    statuses = sorted(status for status, _ids in answers)
    assert statuses == [200] * (COUNT - 1) + [201], statuses
    assert len({tuple(ids) for _status, ids in answers}) == 1  # everyone has the same payment
    payments, succeeded, charges, paid, total = _outcome(pg_app, number)
    assert (payments, succeeded, charges) == (1, 1, 1) and paid == total


def test_twenty_keys_for_one_invoice_pay_it_once(pg_app: Flask) -> None:
    number = _an_open_invoice(pg_app, "710.00")
    statuses = sorted(status for status, _ids in _race(pg_app, number, same_key=False))
    assert statuses == [201] + [409] * (COUNT - 1), statuses
    payments, succeeded, charges, paid, total = _outcome(pg_app, number)
    assert (payments, succeeded, charges) == (1, 1, 1) and paid == total
