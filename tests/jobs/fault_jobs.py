"""Jobs for the fault tests (tests/jobs/test_faults.py), run by real workers by dotted name.

Each appends one line to a file, so how often its side effect happened can be counted; the slow
one also appends a line to `<path>.started` as it begins (how often it was started)."""

from __future__ import annotations

import time
from pathlib import Path


def _append(path: str, line: str) -> None:
    with Path(path).open("a", encoding="utf-8") as document:
        document.write(f"{line}\n")


def write_document(path: str, token: str) -> str:
    """A statement-like document: one line per run."""
    _append(path, token)
    return "written"


def write_document_slowly(path: str, token: str, seconds: float) -> str:
    """Says it started, works for `seconds`, then writes its line (a worker killed in between
    leaves a start and no line)."""
    _append(f"{path}.started", token)
    time.sleep(seconds)  # the job's own work, long enough to be interrupted
    _append(path, token)
    return "written"
