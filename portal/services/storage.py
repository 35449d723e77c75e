"""Where the portal keeps files: statements, documents, attachments.

A small interface (`FileStore`) so that an S3-compatible store can stand in for the local
directory: files are named by keys ("statements/stm_x.pdf"), written whole or not at all, read
as streams, and removed. `LocalStore` keeps them under STORAGE_DIR, which must not be inside the
app's static files (nothing stored is ever served but through a signed link).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9][A-Za-z0-9_.-]*)*")
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


class StorageError(RuntimeError):
    """A key the store refuses, or a file it cannot find."""


@dataclass(frozen=True)
class Stored:
    key: str
    size: int
    sha256: str


class FileStore(Protocol):
    def writer(self, key: str) -> AbstractContextManager[BinaryIO]:
        """The file to write (binary, seekable); in place under `key`, whole, once the block
        ends without an error (an earlier file under the key is replaced); gone otherwise."""
        ...

    def stat(self, key: str) -> Stored | None: ...

    def open(self, key: str) -> BinaryIO: ...

    def delete(self, key: str) -> bool: ...

    def local_path(self, key: str) -> Path | None:
        """A path the web server may send directly, when the store is a local directory."""
        ...


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise StorageError(f"not a storage key: {key!r}")
    return key


class LocalStore:
    """Files under one directory, written to a temporary file beside their place and renamed
    into it (readers never see half a file)."""

    def __init__(self, root: Path) -> None:
        resolved = root.resolve()
        if resolved == STATIC_DIR or STATIC_DIR in resolved.parents:
            raise StorageError(f"the file store may not live under static files: {root}")
        self.root = resolved

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(handle, "w+b") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def stat(self, key: str) -> Stored | None:
        path = self._path(key)
        if not path.is_file():
            return None
        digest = hashlib.sha256()
        with path.open("rb") as source:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
        return Stored(key, path.stat().st_size, digest.hexdigest())

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as error:
            raise StorageError(f"no file under {key!r}") from error

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None
