"""Scheduled payments go from the outbox through a real Redis to an RQ worker on their day."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import SimpleWorker
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import InvoiceStatus, PaymentStatus, Work, WorkState
from tests.conftest import Auth, Inbox
from tests.jobs.test_queue import REDIS_URL
from tests.web.payment_helpers import invoice, method, pay, payment
from tests.work import hold_recurring
from workers.dispatch import Dispatcher
from workers.queue import RQJobQueue


@pytest.fixture
def rq_jobs(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[RQJobQueue]:
    try:
        with Redis.from_url(REDIS_URL, socket_connect_timeout=1) as probe:
            probe.ping()
    except Exception as error:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {error}")
    queue = RQJobQueue(REDIS_URL)
    monkeypatch.setitem(app.extensions, "portal.jobs", queue)
    yield queue
    queue.queue.connection.flushdb()
    queue.queue.connection.close()


def test_a_scheduled_payment_is_handed_to_an_rq_worker_on_its_day(
    app: Flask,
    client: FlaskClient,
    auth: Auth,
    db: Session,
    rq_jobs: RQJobQueue,
    smtp: Inbox,
) -> None:
    clock = app.extensions["portal.clock"]
    auth.sign_in()
    inv = invoice(db, "INV-1003")
    owed = inv.balance_due
    day = clock.today() + timedelta(days=1)
    _response, pid = pay(client, [inv], method(db, "4242").public_id, scheduled_for=day.isoformat())
    made = payment(db, pid)
    assert made.status is PaymentStatus.SCHEDULED
    row = db.scalars(select(Work).where(Work.subject == f"payment:{made.id}")).one()
    assert row.state is WorkState.PENDING and row.run_after.date() == day
    assert rq_jobs.queue.count == 0  # nothing in Redis before its day

    # The recurring jobs ran a moment ago: the dispatcher's passes below hand over the payment
    # alone (the sweep has a test of its own, tests/jobs/test_dispatch.py).
    hold_recurring(app, but=())
    dispatcher = Dispatcher(app, rq_jobs)
    worker = SimpleWorker([rq_jobs.queue], connection=rq_jobs.queue.connection)
    dispatcher.tick()
    assert rq_jobs.queue.count == 0  # not yet due
    clock.advance(timedelta(days=1, hours=7))
    assert dispatcher.tick().handed_over == 1
    assert rq_jobs.queue.job_ids == [f"outbox-{row.id}-1"]
    with app.app_context():
        worker.work(burst=True)  # the payment, then its receipt mail (handed over by the job)
    done = payment(db, pid)
    assert done.status is PaymentStatus.SUCCEEDED, done.status
    assert invoice(db, "INV-1003").status is InvoiceStatus.PAID
    assert invoice(db, "INV-1003").paid_by_payments == owed  # CN-301 settled the rest
    assert len(smtp.messages) == 1 and smtp.messages[0]["To"] == "admin@acme.test"
    rows = db.scalars(select(Work).order_by(Work.id).execution_options(populate_existing=True))
    assert [(r.job.rpartition(".")[2], r.state) for r in rows] == [
        ("run_scheduled_payment", WorkState.DONE),
        ("send_payment_result", WorkState.DONE),
    ]
    assert len(rq_jobs.queue.finished_job_registry.get_job_ids()) == 2
