"""argon2id password hashing."""

from __future__ import annotations

import contextlib
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


@lru_cache(maxsize=4)
def hasher(time_cost: int = 3, memory_cost: int = 65536) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_cost)


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


MIN_LENGTH = 12
MAX_LENGTH = 1024
# The most used passwords of 12+ characters in public breach corpora, plus this product's words.
COMMON = frozenset(
    {
        "123456789012",
        "1234567890123",
        "qwertyuiopas",
        "qwerty123456",
        "password1234",
        "password12345",
        "passwordpassword",
        "iloveyou1234",
        "123123123123",
        "111111111111",
        "000000000000",
        "abcdefghijkl",
        "abc123abc123",
        "letmein12345",
        "welcome12345",
        "changeme1234",
        "administrator",
        "trustno1trustno1",
        "qwertyqwerty",
        "1q2w3e4r5t6y",
        "1qaz2wsx3edc",
        "zaq12wsxcde3",
        "monkey123456",
        "dragon123456",
        "football1234",
        "baseball1234",
        "sunshine1234",
        "princess1234",
        "superman1234",
        "starwars1234",
        "portal-demo-2026",
        "billingportal",
        "customerportal",
    }
)
_SEQUENCES = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm")


def password_problem(password: str, *, email: str, company: str) -> str | None:
    """Why a new password is refused, or None. The caller translates the reason."""
    if len(password) < MIN_LENGTH:
        return "too_short"
    if len(password) > MAX_LENGTH:
        return "too_long"
    lowered = password.lower()
    folded = "".join(ch for ch in lowered if ch.isalnum())
    local = email.split("@", 1)[0].lower()
    words = {local, company.lower().split()[0] if company.strip() else "", "password", "portal"}
    if (
        lowered in COMMON
        or folded in COMMON
        or len(set(lowered)) <= 3
        or any(folded in seq or seq.startswith(folded) for seq in _SEQUENCES)
        or any(len(w) >= 4 and folded.replace(w, "") == "" for w in words if w)
        or any(len(w) >= 4 and w in lowered and len(lowered) - len(w) < 6 for w in words if w)
    ):
        return "too_common"
    return None
