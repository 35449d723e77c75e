"""Scheduled payments go through a real Redis and a real RQ worker with its scheduler."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import SimpleWorker
from rq.registry import ScheduledJobRegistry
from sqlalchemy.orm import Session

from portal.models import InvoiceStatus, PaymentStatus
from tests.conftest import Auth, Inbox
from tests.jobs.test_queue import REDIS_URL
from tests.web.payment_helpers import invoice, method, pay, payment
from workers.queue import RQJobQueue


@pytest.fixture
def rq_jobs(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[RQJobQueue]:
    try:
        Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as error:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {error}")
    queue = RQJobQueue(REDIS_URL)
    monkeypatch.setitem(app.extensions, "portal.jobs", queue)
    yield queue
    Redis.from_url(REDIS_URL).flushdb()


def test_a_scheduled_payment_is_run_by_an_rq_worker_on_its_day(
    app: Flask,
    client: FlaskClient,
    auth: Auth,
    db: Session,
    rq_jobs: RQJobQueue,
    smtp: Inbox,
) -> None:
    clock = app.extensions["portal.clock"]
    # The portal's calendar runs two days behind the real one, so that "tomorrow" for the
    # portal is already past for RQ's scheduler, which reads the real clock.
    clock.advance(timedelta(days=-2))
    auth.sign_in()
    inv = invoice(db, "INV-1003")
    owed = inv.balance_due
    day = clock.today() + timedelta(days=1)
    _response, pid = pay(client, [inv], method(db, "4242").public_id, scheduled_for=day.isoformat())
    made = payment(db, pid)
    assert made.status is PaymentStatus.SCHEDULED
    registry = ScheduledJobRegistry(queue=rq_jobs.queue)
    job_id = f"scheduled-{made.id}"
    assert registry.get_job_ids() == [job_id]
    assert registry.get_scheduled_time(job_id).date() == day

    worker = SimpleWorker([rq_jobs.queue], connection=rq_jobs.queue.connection)
    with app.app_context():
        from workers import jobs

        assert jobs.run_scheduled_payment(made.id) == "scheduled"  # too early: left alone
        clock.advance(timedelta(days=1, hours=1))
        worker.work(burst=True, with_scheduler=True)
    done = payment(db, pid)
    assert done.status is PaymentStatus.SUCCEEDED, done.status
    assert invoice(db, "INV-1003").status is InvoiceStatus.PAID
    assert invoice(db, "INV-1003").amount_paid == owed
    finished = rq_jobs.queue.finished_job_registry.get_job_ids()
    assert job_id in finished and len(finished) == 2  # the payment, then its receipt mail
    assert len(smtp.messages) == 1 and smtp.messages[0]["To"] == "admin@acme.test"
