"""argon2id password hashing."""

from __future__ import annotations

import contextlib
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


@lru_cache(maxsize=4)
def hasher(time_cost: int = 3, memory_cost: int = 65536) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_cost)


def hash_password(password: str, ph: PasswordHasher) -> str:
    return ph.hash(password)


def verify_password(password_hash: str | None, password: str, ph: PasswordHasher) -> bool:
    if not password_hash:
        # Spend the same effort as a real check, so a missing hash is not a timing signal.
        equalize_timing(ph)
        return False
    try:
        return ph.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=4)
def _dummy_hash_for(time_cost: int, memory_cost: int) -> str:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_cost).hash("dummy-password")


def _dummy_hash(ph: PasswordHasher) -> str:
    return _dummy_hash_for(ph.time_cost, ph.memory_cost)


def equalize_timing(ph: PasswordHasher) -> None:
    """Do the work of one failed verification (for an unknown e-mail)."""
    with contextlib.suppress(VerificationError):
        ph.verify(_dummy_hash(ph), "not the password")
