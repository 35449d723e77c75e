"""Company users under concurrency: two administrators demoting each other at the same moment
leave one; the last-admin guard decides on the target as it is under the lock; one invitation
link posted twice at once is accepted once; an invitee deactivated while accepting stays
deactivated; one address invited twice at once is refused, not a 500.

PostgreSQL, on a database of its own with committed rows (the shared test transaction would
serialize everything): the guard locks the company's active administrator rows (SELECT … FOR
UPDATE), so the second demotion waits for the first and then sees it. (SQLite serializes
writers with BEGIN IMMEDIATE; tests/web/test_users.py covers the guard.)"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal import tenancy
from portal.db import unit_of_work
from portal.extensions import password_hasher
from portal.models import PortalUser, Role, UserStatus
from portal.services import audit, users
from tests.conftest import (
    committed_postgres_app,
)


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    yield from committed_postgres_app(tmp_path_factory, "users-concurrency-files")


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


REQUEST = audit.RequestInfo(user_agent="concurrency")


@contextmanager
def _request(app: Flask, actor_email: str | None = None) -> Iterator[tuple[Session, PortalUser]]:
    """One request's writing session: bound to `actor_email`'s company, or (nobody signed in,
    an invitation link) to none; yields the session and the actor (None without one)."""
    with (
        app.app_context(),
        unit_of_work(writes=True),
        app.extensions["portal.db"].sessionmaker() as session,
    ):
        actor = None
        if actor_email is not None:
            with tenancy.system(session):
                actor = _load(session, actor_email)
            tenancy.bind(session, tenancy.scope_for_user(actor))
        yield session, actor  # type: ignore[misc]


def _load(session: Session, email: str) -> PortalUser:
    user = session.scalars(select(PortalUser).where(PortalUser.email == email)).one()
    _ = user.grants
    return user


def _reset(app: Flask) -> None:
    """admin@ the only active administrator, ap@ and new@ active members; earlier tests'
    invitees deactivated."""
    with app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        session.execute(
            update(PortalUser)
            .where(PortalUser.email == "admin@acme.test")
            .values(role=Role.ADMIN, status=UserStatus.ACTIVE)
        )
        session.execute(
            update(PortalUser)
            .where(PortalUser.email.in_(["ap@acme.test", "new@acme.test"]))
            .values(role=Role.CUSTOMER, status=UserStatus.ACTIVE)
        )
        session.execute(
            update(PortalUser)
            .where(PortalUser.email.like("invitee-%"))
            .values(status=UserStatus.DISABLED, invitation_nonce=None)
        )
        session.commit()


def _invitation(app: Flask) -> tuple[str, str]:
    """A committed invitation of a new administrator: their address and link token."""
    address = f"invitee-{uuid.uuid4().hex[:8]}@acme.test"
    now = app.extensions["portal.clock"].now()
    with _request(app, "admin@acme.test") as (session, admin):
        invited, refusal = users.invite(
            session, admin, address, Role.ADMIN, [], now=now, request=REQUEST
        )
        assert refusal is None and invited is not None
        token = users.invitation_token(invited, keys=app.config["SETTINGS"].keyring, now=now)
        session.commit()
    return address, token


def _accept(app: Flask, session: Session, check: users.InvitationCheck, password: str) -> str:
    assert check.state is users.InvitationState.OK and check.user is not None
    state = users.accept_invitation(
        session,
        check.user,
        "Invitee",
        password,
        ph=password_hasher(),
        keys=app.config["SETTINGS"].keyring,
        now=app.extensions["portal.clock"].now(),
        request=REQUEST,
    )
    session.commit()
    return str(state)


def test_one_link_posted_twice_at_once_is_accepted_once(pg_app: Flask) -> None:
    """Two tabs post the same link: both pass the (unlocked) check; the second acceptance
    waits for the first's row lock, then finds the invitation spent."""
    _reset(pg_app)
    address, token = _invitation(pg_app)
    keys, now = pg_app.config["SETTINGS"].keyring, pg_app.extensions["portal.clock"].now()
    with _request(pg_app) as (first, _), _request(pg_app) as (second, _):
        one = users.check_invitation(first, token, keys=keys, now=now)
        two = users.check_invitation(second, token, keys=keys, now=now)
        outcomes = [
            _accept(pg_app, first, one, "violet lantern harbor 42"),
            _accept(pg_app, second, two, "amber canyon meadow 77"),
        ]
    assert outcomes == ["ok", "used"]
    with (
        pg_app.app_context(),
        pg_app.extensions["portal.db"].sessionmaker() as session,
        tenancy.system(session),
    ):
        invitee = _load(session, address)
        assert invitee.status is UserStatus.ACTIVE and invitee.password_hash
        assert password_hasher().verify(invitee.password_hash, "violet lantern harbor 42")


def test_an_invitee_deactivated_while_accepting_stays_deactivated(pg_app: Flask) -> None:
    """Between the link's check and the acceptance an administrator's deactivation commits:
    the acceptance finds the invitation revoked and changes nothing."""
    _reset(pg_app)
    address, token = _invitation(pg_app)
    keys, now = pg_app.config["SETTINGS"].keyring, pg_app.extensions["portal.clock"].now()
    with _request(pg_app) as (accepting, _):
        check = users.check_invitation(accepting, token, keys=keys, now=now)
        with _request(pg_app, "admin@acme.test") as (other, admin):
            refusal = users.deactivate(
                other, admin, _load(other, address), now=now, request=REQUEST
            )
            assert refusal is None
            other.commit()
        assert _accept(pg_app, accepting, check, "violet lantern harbor 42") == "revoked"
    with pg_app.extensions["portal.db"].sessionmaker() as session, tenancy.system(session):
        invitee = _load(session, address)
        assert invitee.status is UserStatus.DISABLED and invitee.password_hash is None


def test_the_last_admin_guard_reads_the_target_under_the_lock(pg_app: Flask) -> None:
    """admin@ deactivates ap@, loaded while ap@ was a member; meanwhile two other requests
    commit: ap@ is made an administrator, then admin@ steps down. The guard decides on ap@
    as it is now (the only active administrator) and refuses."""
    _reset(pg_app)
    now = pg_app.extensions["portal.clock"].now()
    with _request(pg_app, "admin@acme.test") as (slow, admin):
        target = _load(slow, "ap@acme.test")  # as users.find does at the start of the request
        assert target.role is Role.CUSTOMER
        with _request(pg_app, "admin@acme.test") as (other, admin2):
            promoted = users.change_access(
                other, admin2, _load(other, "ap@acme.test"), Role.ADMIN, [], request=REQUEST
            )
            assert promoted is None
            other.commit()
        with _request(pg_app, "admin@acme.test") as (other, admin3):
            west = [g.billing_account_id for g in _load(other, "new@acme.test").grants]
            stepped = users.change_access(
                other, admin3, admin3, Role.CUSTOMER, west, request=REQUEST
            )
            assert stepped is None
            other.commit()
        refusal = users.deactivate(slow, admin, target, now=now, request=REQUEST)
        slow.commit()
    active = _active_admins(pg_app)
    _reset(pg_app)
    assert refusal is users.Refusal.LAST_ADMIN
    assert active == ["ap@acme.test"]


def test_one_address_invited_twice_at_once_is_refused_not_a_500(pg_app: Flask) -> None:
    """Two administrators (or a double submit) invite one address at once: both look it up
    before either commits; the second insert waits on the unique index, then meets the
    first's row, and gets the usual refusal."""
    _reset(pg_app)
    address = f"invitee-{uuid.uuid4().hex[:8]}@acme.test"
    now = pg_app.extensions["portal.clock"].now()
    outcomes: list[object] = []
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with _request(pg_app, "admin@acme.test") as (session, admin):
                invited, refusal = users.invite(
                    session, admin, address, Role.ADMIN, [], now=now, request=REQUEST
                )
                session.commit()
                outcomes.append((invited, refusal))
        except BaseException as error:  # the thread's failure is the test's
            errors.append(error)

    with _request(pg_app, "admin@acme.test") as (session, admin):
        invited, refusal = users.invite(
            session, admin, address, Role.ADMIN, [], now=now, request=REQUEST
        )
        assert refusal is None and invited is not None
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(1.0)  # the second has looked the address up and waits on the index
        session.commit()
    thread.join(timeout=30)
    assert errors == []
    assert outcomes == [(None, users.Refusal.ADDRESS_IN_COMPANY)]
