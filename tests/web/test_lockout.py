"""The sign-in lockout: one rule for every address, so it cannot tell which addresses exist.

A real account with wrong passwords and an address without an account are driven side by side
through the same steps; at every step both must answer alike.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from portal import migrate, tenancy
from portal.db import make_engine, make_sessionmaker, retry_on_conflict, unit_of_work
from portal.extensions import limiter
from portal.models import AuditEvent, Company, LoginThrottle, PortalUser, Role
from portal.services import auth, credentials, lockout
from portal.services.audit import RequestInfo
from portal.services.crypto import Keyring
from portal.services.passwords import hasher
from tests.conftest import (
    FAST_ARGON2,
    TEST_SECRET,
    Auth,
    Backend,
    QueryCounter,
    _postgres_database,
    csrf_token,
    totp_code,
    user_by_email,
)

T = TypeVar("T")

INCORRECT = "Incorrect email or password."
LOCKED = "This account is locked after too many failed attempts. Try again in 15 minutes."
REAL, GHOST = "ap@acme.test", "ghost@acme.test"
WINDOW = timedelta(minutes=15)


WRONG = "not-the-password"


@pytest.fixture(autouse=True)
def no_rate_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate limits (per client address, in real time) are a wall of their own, tested in
    test_mfa.py; these tests make many attempts in a row to exercise the lockout alone."""
    monkeypatch.setattr(limiter, "enabled", False)


def _answer(auth: Auth, email: str, password: str = WRONG) -> tuple[int, str]:
    """What a person sees: the status and the form's error message."""
    response = auth.login(email, password)
    page = response.get_data(as_text=True)
    message = next((m for m in (LOCKED, INCORRECT) if m in page), "")
    return response.status_code, message


def _both(auth: Auth, password: str = WRONG) -> tuple[Any, Any]:
    return _answer(auth, REAL, password), _answer(auth, GHOST, password)


def _move(app: Flask, delta: timedelta) -> None:
    app.extensions["portal.clock"].advance(delta)


def test_real_and_unknown_addresses_answer_alike_step_by_step(auth: Auth) -> None:
    steps = [_both(auth) for _ in range(5)]
    assert steps == [((401, INCORRECT), (401, INCORRECT))] * 4 + [((401, LOCKED), (401, LOCKED))]


def test_failures_run_out_with_the_window_for_both(app: Flask, auth: Auth) -> None:
    """The issue: four failures, wait past the window, a fifth. The real account said "locked"
    (its count never ran out), the unknown address "Incorrect": that told them apart."""
    for _ in range(4):
        assert _both(auth) == ((401, INCORRECT), (401, INCORRECT))
    _move(app, WINDOW + timedelta(seconds=1))
    assert _both(auth) == ((401, INCORRECT), (401, INCORRECT))
    # A new window began with that failure: four more lock both (five within the window).
    for _ in range(3):
        assert _both(auth) == ((401, INCORRECT), (401, INCORRECT))
    assert _both(auth) == ((401, LOCKED), (401, LOCKED))


def test_the_window_counts_from_the_first_failure(app: Flask, auth: Auth) -> None:
    for _ in range(3):
        _both(auth)
    _move(app, timedelta(minutes=10))
    _both(auth)  # the 4th, 10 minutes into the window
    _move(app, timedelta(minutes=5))  # 15 minutes after the first failure: the window is over
    assert _both(auth) == ((401, INCORRECT), (401, INCORRECT))
    assert _both(auth) == ((401, INCORRECT), (401, INCORRECT))  # 2 of the new window


def test_at_the_lock_both_refuse_even_the_right_password_until_it_runs_out(
    app: Flask, auth: Auth
) -> None:
    for _ in range(5):
        _both(auth)
    assert _both(auth, "portal-demo-2026") == ((401, LOCKED), (401, LOCKED))
    _move(app, timedelta(minutes=14))
    assert _both(auth, "portal-demo-2026") == ((401, LOCKED), (401, LOCKED))  # not extended
    _move(app, timedelta(minutes=1, seconds=1))
    # The lock ran out: a fresh start for both.
    assert _answer(auth, GHOST) == (401, INCORRECT)
    assert auth.login(REAL).headers["Location"] == "/login/mfa"


def test_a_fresh_count_after_the_lock_runs_out(app: Flask, auth: Auth) -> None:
    for _ in range(5):
        _both(auth)
    _move(app, WINDOW + timedelta(seconds=1))
    for _ in range(4):
        assert _both(auth) == ((401, INCORRECT), (401, INCORRECT))
    assert _both(auth) == ((401, LOCKED), (401, LOCKED))


def _statements(counter: QueryCounter, auth: Auth, email: str) -> list[str]:
    counter.statements.clear()
    assert auth.login(email, WRONG).status_code == 401
    return list(counter.statements)


def test_the_same_queries_for_a_real_and_an_unknown_address(
    auth: Auth, count_queries: QueryCounter
) -> None:
    """Not only the same message: the same work (the same SQL, in the same order) at every
    step, the locking one included. (The password hashing is the same too: a missing account
    verifies a dummy hash of the same cost.)"""
    csrf_token(auth.client)  # the session cookie exists before counting
    for step in range(6):
        real = _statements(count_queries, auth, REAL)
        ghost = _statements(count_queries, auth, GHOST)
        assert real == ghost, f"step {step + 1}"
        assert any("login_throttles" in s for s in real)


def test_the_store_names_nobody(db: Session, auth: Auth) -> None:
    _both(auth)
    with tenancy.system(db):
        keys = db.scalars(select(LoginThrottle.key_hash)).all()
    assert len(keys) == 2
    assert all(len(k) == 64 and "acme" not in k for k in keys)
    assert hashlib.sha256(REAL.encode()).hexdigest() not in keys  # keyed, not a plain hash


def test_locking_is_audited_for_both(db: Session, auth: Auth) -> None:
    for _ in range(5):
        _both(auth)
    with tenancy.system(db):
        locked = db.scalars(select(AuditEvent).where(AuditEvent.name == "Portal.AccountLocked"))
        companies = sorted((e.company_id is not None) for e in locked)
    assert companies == [False, True]  # one for the account, one for the unknown address


def test_code_failures_count_toward_the_same_lockout(app: Flask, auth: Auth) -> None:
    for _ in range(3):
        assert _answer(auth, REAL) == (401, INCORRECT)
    assert auth.login(REAL).headers["Location"] == "/login/mfa"
    assert auth.code("123456").status_code == 401  # the 4th failure
    locked = auth.code("123456")  # the 5th locks the address
    assert LOCKED in locked.get_data(as_text=True)
    assert _answer(auth, REAL, "portal-demo-2026") == (401, LOCKED)


def test_a_passed_second_factor_clears_the_count(app: Flask, auth: Auth) -> None:
    for _ in range(4):
        _answer(auth, REAL)
    _move(app, timedelta(seconds=30))
    assert auth.login(REAL).headers["Location"] == "/login/mfa"
    assert auth.code().status_code == 302
    auth.logout()
    for _ in range(4):
        assert _answer(auth, REAL) == (401, INCORRECT)  # a fresh count: not locked at the 5th


def test_a_password_reset_clears_the_lock(
    app: Flask, client: FlaskClient, auth: Auth, db: Session
) -> None:
    for _ in range(5):
        _answer(auth, REAL)
    assert _answer(auth, REAL, "portal-demo-2026") == (401, LOCKED)
    now = app.extensions["portal.clock"].now()
    token = credentials.reset_token(user_by_email(db, REAL), keys=KEYS, now=now)
    link = f"/password/reset/{token}"
    new = "correct horse battery staple"
    done = client.post(
        link,
        data={"csrf_token": csrf_token(client, link), "new_password": new, "confirm_password": new},
    )
    assert done.headers["Location"] == "/login"
    assert auth.login(REAL, new).headers["Location"] == "/login/mfa"


def test_the_right_code_after_a_lock_ran_out(app: Flask, auth: Auth) -> None:
    auth.login(REAL)
    for _ in range(5):
        auth.code("123456")
    _move(app, WINDOW + timedelta(seconds=1))
    auth.login(REAL)
    assert auth.code(totp_code(app)).headers["Location"] == "/portal/dashboard"


# concurrency: each failure counts, on both backends ----------------------------------------

PARALLEL = 12
RACER = "racer@race.test"


def _race_database(urls: Iterator[str]) -> Iterator[sessionmaker[Session]]:
    """A database of its own (migrated, one company with one user) whose sessions commit for
    real: the shared test transaction would serialize everything, and committed audit rows
    must not reach the other tests' database."""
    url = next(urls)
    engine = make_engine(url)
    with engine.begin() as connection:
        migrate.upgrade(connection=connection)
    sessions = make_sessionmaker(engine)
    with sessions() as session, tenancy.system(session):
        company = Company(name="Race Ltd", currency="USD")
        session.add(company)
        session.flush()
        session.add(
            PortalUser(
                company_id=company.id,
                email=RACER,
                name="Rae Racer",
                role=Role.ADMIN,
                password_hash=_hasher().hash("the-right-password"),
            )
        )
        session.commit()
    yield sessions
    engine.dispose()
    for _ in urls:  # drops the PostgreSQL database
        pass


@pytest.fixture(scope="module")
def race_database(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sessionmaker[Session]]:
    """One per backend."""
    if backend.name == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path_factory.mktemp('race') / 'race.db'}"])
    else:
        urls = _postgres_database()
    yield from _race_database(urls)


def _hasher() -> PasswordHasher:
    return hasher(FAST_ARGON2["argon2_time_cost"], FAST_ARGON2["argon2_memory_cost"])


def _in_parallel(works: list[Callable[[], T]]) -> list[T]:
    """Run every callable on its own thread, all released at once; their results in order."""
    start = threading.Barrier(len(works))
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(index: int, work: Callable[[], T]) -> None:
        try:
            start.wait()
            results[index] = work()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=item) for item in enumerate(works)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    return [results[i] for i in range(len(works))]


KEYS = Keyring(TEST_SECRET)


@pytest.mark.parametrize("email", [RACER, "nobody@race.test"])
def test_parallel_failures_each_count(race_database: sessionmaker[Session], email: str) -> None:
    """N failures at once for one address leave a count of N: each upsert saw the one before it
    (the counts returned are exactly 1..N), and the lock falls on the threshold-th."""
    key = lockout.key_for(KEYS, email)
    rule = lockout.Rule(threshold=PARALLEL - 2, period=WINDOW)
    now = datetime.now(UTC)

    def fail_once() -> lockout.Failure:
        with race_database() as session:

            def attempt() -> lockout.Failure:
                failure = lockout.record_failure(session, key, rule=rule, now=now)
                session.commit()
                return failure

            return retry_on_conflict(session, attempt)

    failures = _in_parallel([fail_once] * PARALLEL)
    assert sorted(f.failures for f in failures) == list(range(1, PARALLEL + 1))
    assert [f.failures for f in failures if f.just_locked] == [PARALLEL - 2]
    assert all((f.locked_until is not None) == (f.failures >= PARALLEL - 2) for f in failures)
    with race_database() as session:
        stored = session.get(LoginThrottle, key)
        assert stored is not None and stored.failures == PARALLEL


@pytest.mark.parametrize("declared", [True, False], ids=["writing-unit", "undeclared"])
def test_parallel_wrong_passwords_each_count_for_both(
    race_database: sessionmaker[Session], declared: bool
) -> None:
    """The whole password step at once from many requests, for a real account and an unknown
    address interleaved: every failure counts, and both alike. Declared as a writing unit (as a
    POST to /login is) or not, SQLite's lock never refuses one."""
    policy = auth.SessionPolicy(
        idle=timedelta(minutes=30),
        absolute=timedelta(hours=12),
        lockout_threshold=100,
        lockout=WINDOW,
    )
    now = datetime.now(UTC) + timedelta(hours=2 if declared else 4)  # a window of its own
    emails = [RACER, "ghost@race.test"]
    each = PARALLEL // 2

    def check(email: str) -> Callable[[], auth.SignInOutcome]:
        def work() -> auth.SignInOutcome:
            with unit_of_work(writes=declared), race_database() as session:

                def attempt() -> auth.SignInOutcome:
                    result = auth.check_password(
                        session,
                        email,
                        "not-the-password",
                        ph=_hasher(),
                        keys=KEYS,
                        policy=policy,
                        now=now,
                        request=RequestInfo(ip_address="192.0.2.1"),
                    )
                    session.commit()
                    return result.outcome

                return retry_on_conflict(session, attempt)

        return work

    outcomes = _in_parallel([check(emails[i % 2]) for i in range(2 * each)])
    assert outcomes == [auth.SignInOutcome.INVALID] * (2 * each)
    with race_database() as session:
        stored = [session.get(LoginThrottle, lockout.key_for(KEYS, e)) for e in emails]
        assert [row.failures if row else 0 for row in stored] == [each, each]
