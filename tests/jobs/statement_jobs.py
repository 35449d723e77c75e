"""A statement job for tests/jobs/test_statement_worker.py that takes its time, run by real
workers by dotted name in place of the portal's own (the test rewrites the outbox row).

It is the real job (`workers.jobs.generate_statement`) with a renderer that appends a line to
`marker` as it begins and, on the job's first run only, then waits `seconds`: long enough for
the test to kill the worker while the statement is "generating". The renderer is swapped in the
process that runs the job (a child RQ forked for it) and put back after; the portal's code knows
nothing of it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, BinaryIO

from portal.services.statements import render
from workers import jobs


def _append(path: str, line: str) -> None:
    with Path(path).open("a", encoding="utf-8") as marker:
        marker.write(f"{line}\n")


def generate_statement_slowly(statement_id: int, marker: str, seconds: float) -> str:
    first = not Path(marker).exists()
    real = dict(render.RENDERERS)

    def slow(fmt: Any) -> render.Renderer:
        renderer = real[fmt]

        def draw(data: Any, out: BinaryIO, progress: Any) -> None:
            _append(marker, "rendering")
            if first:
                time.sleep(seconds)  # the job's own work, long enough to be interrupted
            renderer.render(data, out, progress)

        return dataclasses.replace(renderer, render=draw)

    render.RENDERERS.update({fmt: slow(fmt) for fmt in real})
    try:
        return jobs.generate_statement(statement_id)
    finally:
        render.RENDERERS.update(real)
