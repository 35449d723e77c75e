"""The statement's file formats: how each is rendered, its media type and file name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Protocol

from portal.models.statement import StatementFormat
from portal.services.statements import render_csv, render_pdf, render_xlsx
from portal.services.statements.data import Progress, StatementData


class RenderFunction(Protocol):
    def __call__(self, data: StatementData, out: BinaryIO, progress: Progress) -> None: ...


@dataclass(frozen=True)
class Renderer:
    render: RenderFunction
    content_type: str
    extension: str


RENDERERS: dict[StatementFormat, Renderer] = {
    StatementFormat.PDF: Renderer(render_pdf.render, "application/pdf", "pdf"),
    StatementFormat.XLSX: Renderer(
        render_xlsx.render,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xlsx",
    ),
    StatementFormat.CSV: Renderer(render_csv.render, "text/csv; charset=utf-8", "csv"),
}


def filename(data: StatementData, fmt: StatementFormat) -> str:
    """statement-2026-01-01-2026-03-31.pdf"""
    extension = RENDERERS[StatementFormat(fmt)].extension
    return f"statement-{data.start.isoformat()}-{data.end.isoformat()}.{extension}"
