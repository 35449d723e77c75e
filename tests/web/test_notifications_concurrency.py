"""Two requests storing the same notification choice at once: both answer, one change is
stored and audited once. PostgreSQL, on a database of its own with committed rows (the shared
test transaction would serialize everything): each choice is one INSERT … ON CONFLICT DO
UPDATE … WHERE the value differs, so the second waits for the first and then changes nothing.
(SQLite serializes writers; tests/web/test_notifications.py covers the single request.)"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import unit_of_work
from portal.models import (
    AuditEvent,
    NotificationChannel,
    NotificationPreference,
    NotificationSettings,
    NotificationTopic,
    PortalUser,
)
from portal.services import audit, notifications
from portal.services.crypto import Keyring
from tests.conftest import (
    TEST_SECRET,
    committed_postgres_app,
    user_by_email,
)

DUE = NotificationTopic.PAYMENT_DUE
EMAIL = NotificationChannel.EMAIL


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    yield from committed_postgres_app(tmp_path_factory, "notifications-concurrency-files")


def _both_read_first(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Both requests read the stored choice before either writes."""
    both_read = threading.Barrier(2, timeout=5)
    real: Callable[..., Any] = getattr(notifications, name)

    def read_then_wait(session: Session, user: PortalUser) -> Any:
        found = real(session, user)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()
        return found

    monkeypatch.setattr(notifications, name, read_then_wait)


def _at_once(action: Callable[[], object]) -> list[object]:
    outcomes: list[object] = []

    def run() -> None:
        try:
            outcomes.append(action())
        except Exception as error:  # the defect: IntegrityError on the unique key
            outcomes.append(type(error).__name__)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def _audited(app: Flask, name: str, user_id: int) -> int:
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        return int(
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.name == name, AuditEvent.user_id == user_id)
            )
            or 0
        )


@pytest.mark.parametrize("stored", ["default", "stored on"])
def test_two_one_click_unsubscribes_at_once_both_answer_and_one_is_audited(
    pg_app: Flask, monkeypatch: pytest.MonkeyPatch, stored: str
) -> None:
    app = pg_app
    email = "ap@acme.test" if stored == "default" else "admin@acme.test"
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        user = user_by_email(session, email)
        session.execute(
            delete(NotificationPreference).where(NotificationPreference.user_id == user.id)
        )
        if stored == "stored on":
            session.add(
                NotificationPreference(
                    company_id=user.company_id,
                    user_id=user.id,
                    topic=DUE,
                    channel=EMAIL.value,
                    enabled=True,
                )
            )
        session.commit()
        user_id = user.id
        token = notifications.unsubscribe_token(
            user, DUE, keys=Keyring(TEST_SECRET), now=app.extensions["portal.clock"].now()
        )
    _both_read_first(monkeypatch, "preferences")

    def click() -> object:
        return (
            app.test_client()
            .post(
                f"/unsubscribe/{token}",
                data="List-Unsubscribe=One-Click",
                content_type="application/x-www-form-urlencoded",
            )
            .status_code
        )

    assert _at_once(click) == [200, 200]
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        stored_rows = session.scalars(
            select(NotificationPreference.enabled).where(NotificationPreference.user_id == user_id)
        ).all()
    assert stored_rows == [False]
    assert _audited(app, "Portal.Unsubscribed", user_id) == 1


def test_two_saves_of_the_reminder_lead_time_at_once_store_and_audit_it_once(
    pg_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = pg_app
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        user = user_by_email(session, "new@acme.test")
        session.execute(delete(NotificationSettings).where(NotificationSettings.user_id == user.id))
        session.commit()
        user_id, wanted = user.id, notifications.preferences(session, user)
    _both_read_first(monkeypatch, "remind_days")

    def save() -> object:
        with (
            app.app_context(),
            unit_of_work(writes=True),
            app.extensions["portal.db"].sessionmaker() as session,
        ):
            with tenancy.system(session):
                user = session.get(PortalUser, user_id)
                assert user is not None
                _ = user.grants, user.company
            tenancy.bind(session, tenancy.scope_for_user(user))
            changed = notifications.update_preferences(
                session, user, wanted, 7, request=audit.RequestInfo(user_agent="race")
            )
            session.commit()
            return changed

    assert sorted(map(str, _at_once(save))) == ["['remind_days']", "[]"]
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        days = session.scalars(
            select(NotificationSettings.remind_days_before).where(
                NotificationSettings.user_id == user_id
            )
        ).all()
    assert days == [7]
    assert _audited(app, "Portal.NotificationPreferencesUpdated", user_id) == 1
