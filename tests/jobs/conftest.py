"""The fault tests' parts (tests/jobs/test_faults.py: a committed database per test, a
redis-server of the test's own, a real SMTP server, worker processes) for every test here."""

from tests.jobs.test_faults import database, mailbox, portal, redis_server

__all__ = ["database", "mailbox", "portal", "redis_server"]
