"""The renderer registry, with a plain CSV writer for every format until the formats land."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, BinaryIO

from portal.models import StatementFormat
from portal.services.statements.data import StatementData


def _csv(data: StatementData, out: BinaryIO, progress: Any) -> None:
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="")
    writer = csv.writer(text)
    done = 0
    for section in data.sections:
        writer.writerow(["opening", section.account_name, section.currency, section.opening])
        for line in section.lines:
            writer.writerow(
                [line.day, line.kind, line.reference, line.debit, line.credit, line.balance]
            )
            done += 1
            progress(done)
        writer.writerow(["closing", section.closing])
    text.flush()
    text.detach()


@dataclass(frozen=True)
class Renderer:
    render: Any
    content_type: str
    extension: str


RENDERERS = {f: Renderer(_csv, "text/csv", f.value) for f in StatementFormat}


def filename(data: StatementData, fmt: StatementFormat) -> str:
    return f"statement-{data.start}-{data.end}.{fmt.value}"
