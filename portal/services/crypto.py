"""Everything keyed from SECRET_KEY: encryption at rest for small secrets (TOTP seeds) and the
keyed hashes and signatures derived from it, with rotation.

A Keyring holds the current key and the earlier ones (SECRET_KEY_FALLBACKS): the current key
writes (encrypts, hashes, signs), every key reads. So a key can be rotated without signing
everyone out or making stored secrets unreadable; see docs/operations.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

__all__ = ["InvalidToken", "Keyring", "Unreadable", "decrypt", "encrypt"]


class Unreadable(ValueError):
    """A stored secret that none of the configured keys can decrypt (its key is gone)."""


@dataclass(frozen=True)
class Keyring:
    current: str
    previous: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        """Every key, the current one first."""
        return (self.current, *self.previous)

    @property
    def oldest_first(self) -> list[str]:
        """Every key, the current one last (itsdangerous's order for rotation)."""
        return [*reversed(self.previous), self.current]

    def links(self, salt: str, now: datetime) -> URLSafeTimedSerializer:
        """The signer of a link in a mail (reset, invitation, download, unsubscribe…): signed
        with the current key, opened by any (SECRET_KEY_FALLBACKS), its age read by the
        portal's clock `now` rather than the system's, so expiry can be tested."""

        class _Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(now.timestamp())

        return URLSafeTimedSerializer(self.oldest_first, salt=salt, signer=_Signer)

    def encrypt(self, plaintext: str) -> bytes:
        return _fernet(self.current).encrypt(plaintext.encode())

    def decrypt(self, token: bytes) -> tuple[str, bool]:
        """The plaintext, and whether it was written under an earlier key (so the caller may
        store it again under the current one). Raises Unreadable when no key opens it."""
        try:
            return _fernet(self.current).decrypt(token).decode(), False
        except InvalidToken:
            pass
        if self.previous:
            try:
                return MultiFernet([_fernet(k) for k in self.previous]).decrypt(
                    token
                ).decode(), True
            except InvalidToken:
                pass
        raise Unreadable("no configured key decrypts this secret")

    def mac(self, purpose: bytes, message: bytes) -> str:
        """A keyed hash under the current key (hex), with a subkey of its own per purpose."""
        return _mac(self.current, purpose, message)

    def macs(self, purpose: bytes, message: bytes) -> list[str]:
        """`mac` under every key, the current one first (to recognise a hash made earlier)."""
        return [_mac(key, purpose, message) for key in self.all]


def _mac(key: str, purpose: bytes, message: bytes) -> str:
    return hmac.new(_subkey(key, purpose), message, hashlib.sha256).hexdigest()


@lru_cache(maxsize=32)
def _subkey(secret_key: str, purpose: bytes) -> bytes:
    """A key of its own for each use, so one use's values say nothing about another's."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret_key.encode()
    )


@lru_cache(maxsize=8)
def _fernet(secret_key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(_subkey(secret_key, b"portal.secrets-at-rest.v1")))


def encrypt(secret_key: str, plaintext: str) -> bytes:
    return _fernet(secret_key).encrypt(plaintext.encode())


def decrypt(secret_key: str, token: bytes) -> str:
    return _fernet(secret_key).decrypt(token).decode()
