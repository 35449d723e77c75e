"""Writing one section of docs/BENCHMARKS.md in place, keeping its previous figures.

Each benchmark (bench/jobs.py, bench/statements.py) owns a section headed `## …`; a new run
replaces it before LAST_SECTION (or at the end), and the figures it held move under PREVIOUS
with the time they were taken (the run before that is dropped).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

LAST_SECTION = "## Misses explained (profiles)"
PREVIOUS = "### Previous run"


def write_section(output: Path, heading: str, render: Callable[[str], str]) -> None:
    """Put `render(previous figures)` in place of the section headed `heading` in `output`."""
    document = output.read_text() if output.exists() else "# Benchmarks\n"
    previous = ""
    start = document.find(f"\n{heading}")
    if start >= 0:
        following = re.search(r"^## ", document[start + 1 + len(heading) :], re.MULTILINE)
        end = start + 1 + len(heading) + following.start() if following else len(document)
        old = document[start + 1 : end]
        document = document[: start + 1] + document[end:]
        body = old[len(heading) :].split(PREVIOUS)[0]
        table_at = body.find("\n|")
        previous = body[table_at + 1 :].strip() if table_at >= 0 else ""
        when = re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", body)
        if when and previous:
            previous = f"{when.group(0)}:\n\n{previous}"
    text = render(previous).rstrip() + "\n\n"
    at = document.find(f"\n{LAST_SECTION}")
    if at >= 0:
        document = document[: at + 1] + text + document[at + 1 :]
    else:
        document = document.rstrip() + "\n\n" + text
    output.write_text(document.rstrip() + "\n")
