"""Exactly once under concurrency, with real connections and committed rows.

PostgreSQL runs on its own database (whatever PORTAL_TEST_BACKENDS says): the row locks are the
point, and the shared test transaction would serialize everything. SQLite (what `make run`
uses) runs on its own file: there the database lock serializes writers, and a submit that
loses the race must still answer properly, never "database is locked".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from portal import tenancy
from portal.models import Invoice, Payment, PaymentAllocation, PaymentStatus, SandboxCharge
from tests.conftest import (
    COOKIE,
    Auth,
    Backend,
    committed_postgres_app,
    make_app,
    migrate_and_seed,
)
from tests.factories import account_named, make_invoice
from tests.web.payment_helpers import KEY, TOKEN

SUBMISSIONS = 50


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    yield from committed_postgres_app(tmp_path_factory, "concurrency-files")


def _an_open_invoice(app: Flask, total: str) -> str:
    """Committed (these tests run on databases of their own); returns its number."""
    with app.extensions["portal.db"].sessionmaker() as session:
        invoice = make_invoice(session, account_named(session, "Acme West"), total, due=-45)
        session.commit()
        return invoice.number


def _lookup(app: Flask, number: str) -> tuple[str, int, int]:
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        invoice = session.scalars(select(Invoice).where(Invoice.number == number)).one()
        return invoice.public_id, invoice.id, invoice.balance_due


def _visa(app: Flask) -> str:
    from portal.models import PaymentMethod

    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        return session.scalars(
            select(PaymentMethod.public_id).where(PaymentMethod.last4 == "4242")
        ).first()  # type: ignore[return-value]


def _signed_in_clients(app: Flask, count: int) -> list[FlaskClient]:
    first = app.test_client()
    Auth(app, first).sign_in()
    cookie = first.get_cookie(COOKIE)
    assert cookie is not None
    clients = []
    for _ in range(count):
        client = app.test_client()
        client.set_cookie(COOKIE, cookie.value)
        clients.append(client)
    return clients


def _race(app: Flask, number: str, *, same_key: bool, count: int = SUBMISSIONS) -> list[int]:
    public_id, _, balance = _lookup(app, number)
    visa = _visa(app)
    clients = _signed_in_clients(app, count)
    forms = []
    for client in clients:
        page = client.get(f"/portal/payment?invoice={public_id}").get_data(as_text=True)
        key, token = KEY.search(page), TOKEN.search(page)
        assert key and token, page
        forms.append((key.group(1), token.group(1)))
    if same_key:
        forms = [(forms[0][0], token) for _key, token in forms]
    barrier = threading.Barrier(count)
    statuses: list[int] = []
    lock = threading.Lock()

    def submit(client: FlaskClient, key: str, token: str) -> None:
        data = {
            "csrf_token": token,
            "idempotency_key": key,
            "invoice": public_id,
            "action": "confirm",
            "method": visa,
            f"amount-{public_id}": f"{balance / 100:.2f}",
        }
        barrier.wait()
        status = client.post("/portal/payment", data=data).status_code
        with lock:
            statuses.append(status)

    threads = [
        threading.Thread(target=submit, args=(client, *form))
        for client, form in zip(clients, forms, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


def _outcome(app: Flask, number: str) -> tuple[int, int, int, int, int]:
    _public_id, invoice_id, _balance = _lookup(app, number)
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        invoice = session.get(Invoice, invoice_id)
        assert invoice is not None
        payments = session.scalars(
            select(Payment)
            .join(PaymentAllocation)
            .where(PaymentAllocation.invoice_id == invoice_id)
        ).all()
        succeeded = [p for p in payments if p.status is PaymentStatus.SUCCEEDED]
        references = [p.gateway_reference for p in payments if p.gateway_reference]
        charges = session.scalar(
            select(func.count())
            .select_from(SandboxCharge)
            .where(SandboxCharge.reference.in_(references))
        )
        return len(payments), len(succeeded), charges or 0, invoice.amount_paid, invoice.total


def test_fifty_concurrent_payments_for_one_invoice_charge_once(pg_app: Flask) -> None:
    number = _an_open_invoice(pg_app, "1500.00")
    statuses = _race(pg_app, number, same_key=False)
    assert len(statuses) == SUBMISSIONS
    assert statuses.count(303) == 1 and statuses.count(409) == SUBMISSIONS - 1, statuses
    payments, succeeded, charges, paid, total = _outcome(pg_app, number)
    assert (payments, succeeded, charges) == (1, 1, 1)
    assert paid == total  # the balance is exactly zero, never below


def test_fifty_concurrent_double_submits_are_one_payment(pg_app: Flask) -> None:
    statuses = _race(pg_app, "INV-1012", same_key=True)
    assert statuses == [303] * SUBMISSIONS  # everyone lands on the same payment
    payments, succeeded, charges, paid, total = _outcome(pg_app, "INV-1012")
    assert (payments, succeeded, charges) == (1, 1, 1) and paid == total


@pytest.fixture(scope="module")
def sqlite_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    folder = tmp_path_factory.mktemp("concurrency-sqlite")
    url = f"sqlite:///{folder / 'portal.db'}"
    migrate_and_seed(url, folder / "files", date.today())
    app = make_app(Backend("sqlite", url, date.today(), folder / "files"))
    yield app
    app.extensions["portal.db"].engine.dispose()


@pytest.mark.parametrize("same_key", [False, True])
def test_concurrent_submits_on_sqlite_answer_properly(sqlite_app: Flask, same_key: bool) -> None:
    number = "INV-1002" if same_key else "INV-1003"
    statuses = _race(sqlite_app, number, same_key=same_key, count=12)
    if same_key:
        assert statuses == [303] * 12, statuses
    else:
        assert sorted(statuses) == [303] + [409] * 11, statuses
    payments, succeeded, charges, paid, total = _outcome(sqlite_app, number)
    assert (payments, succeeded, charges) == (1, 1, 1) and paid == total


def _race_group(app: Flask, numbers: tuple[str, str], count: int) -> list[tuple[int, str]]:
    """`count` submits of ONE form (one key) paying invoices of two accounts, all at once."""
    ids = [_lookup(app, number) for number in numbers]
    visa = _visa(app)
    clients = _signed_in_clients(app, count)
    query = "&".join(f"invoice={public_id}" for public_id, _id, _balance in ids)
    first = clients[0].get(f"/portal/payment?{query}").get_data(as_text=True)
    key = KEY.search(first)
    assert key, first
    tokens = []
    for client in clients:
        page = client.get(f"/portal/payment?{query}").get_data(as_text=True)
        token = TOKEN.search(page)
        assert token
        tokens.append(token.group(1))
    barrier = threading.Barrier(count)
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def submit(client: FlaskClient, token: str) -> None:
        data: dict[str, object] = {
            "csrf_token": token,
            "idempotency_key": key.group(1),
            "invoice": [public_id for public_id, _id, _balance in ids],
            "action": "confirm",
            "method": visa,
        }
        for public_id, _id, balance in ids:
            data[f"amount-{public_id}"] = f"{balance / 100:.2f}"
        barrier.wait()
        response = client.post("/portal/payment", data=data)
        with lock:
            answers.append((response.status_code, response.headers.get("Location", "")))

    threads = [
        threading.Thread(target=submit, args=(client, token))
        for client, token in zip(clients, tokens, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def _group_outcome(app: Flask, numbers: tuple[str, str]) -> tuple[int, int, int, int, bool]:
    from portal.models import PaymentGroup

    invoice_ids = [_lookup(app, number)[1] for number in numbers]
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        made = session.scalars(
            select(Payment)
            .join(PaymentAllocation)
            .where(PaymentAllocation.invoice_id.in_(invoice_ids))
        ).all()
        groups = {p.group_id for p in made}
        references = [p.gateway_reference for p in made if p.gateway_reference]
        charges = session.scalar(
            select(func.count())
            .select_from(SandboxCharge)
            .where(SandboxCharge.reference.in_(references))
        )
        paid_in_full = all(
            (invoice := session.get(Invoice, invoice_id)) is not None
            and invoice.amount_paid == invoice.total
            for invoice_id in invoice_ids
        )
        group_rows = session.scalar(
            select(func.count()).select_from(PaymentGroup).where(PaymentGroup.id.in_(groups))
        )
        succeeded = sum(p.status is PaymentStatus.SUCCEEDED for p in made)
        return len(made), succeeded, charges or 0, group_rows or 0, paid_in_full


def test_concurrent_submits_of_one_group_make_one_set(pg_app: Flask) -> None:
    numbers = ("INV-1004", "INV-2003")
    answers = _race_group(pg_app, numbers, count=20)
    assert {status for status, _location in answers} == {303}, answers
    locations = {location for _status, location in answers}
    assert len(locations) == 1 and "/portal/payments/group/pgr_" in locations.pop()
    assert _group_outcome(pg_app, numbers) == (2, 2, 2, 1, True)


def test_concurrent_submits_of_one_group_on_sqlite(sqlite_app: Flask) -> None:
    numbers = ("INV-1004", "INV-2003")
    answers = _race_group(sqlite_app, numbers, count=8)
    assert {status for status, _location in answers} == {303}, answers
    assert len({location for _status, location in answers}) == 1
    assert _group_outcome(sqlite_app, numbers) == (2, 2, 2, 1, True)
