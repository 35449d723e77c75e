"""The statement as CSV: UTF-8 with a byte order mark (so spreadsheets read it as UTF-8), RFC 4180
(CRLF line ends, fields quoted when they hold a comma, a quote or a line break).

One table for all sections: per section a row for the opening balance, one per line, one for the
closing balance (with the section's total charges and credits) and one per aging bucket and
their total. Dates are ISO 8601, amounts plain decimals with a point and the currency's decimals
("1234.50"). A text field that a spreadsheet would take for a formula (it starts with = + - @,
a tab or a carriage return) is written with a leading apostrophe.
"""

from __future__ import annotations

import csv
import io
from typing import BinaryIO

from portal.services.statements.data import Progress, StatementData
from portal.services.statements.labels import aging_values, labels, plain

PROGRESS_EVERY = 250
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """`text` as a spreadsheet shows it, never evaluates it."""
    return "'" + text if text.startswith(FORMULA_START) else text


def render(data: StatementData, out: BinaryIO, progress: Progress) -> None:
    names = labels(data.locale)
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=False)
    try:
        writer = csv.writer(text, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(
            [
                names.account_number,
                names.account,
                names.currency,
                names.date,
                names.type,
                names.line_reference,
                names.description,
                names.debit,
                names.credit,
                names.balance,
            ]
        )
        start, end = data.start.isoformat(), data.end.isoformat()
        kinds = {kind: neutralise(name) for kind, name in names.kinds.items()}
        written = 0
        for section in data.sections:
            currency = section.currency
            account = (
                neutralise(section.account_number),
                neutralise(section.account_name),
                neutralise(currency),
            )
            writer.writerow(
                (
                    *account,
                    start,
                    neutralise(names.opening),
                    "",
                    "",
                    "",
                    "",
                    plain(section.opening, currency),
                )
            )
            for line in section.lines:
                writer.writerow(
                    (
                        *account,
                        line.day.isoformat(),
                        kinds[line.kind],
                        neutralise(line.reference),
                        neutralise(line.description),
                        plain(line.debit, currency) if line.debit else "",
                        plain(line.credit, currency) if line.credit else "",
                        plain(line.balance, currency),
                    )
                )
                written += 1
                if written % PROGRESS_EVERY == 0:
                    progress(written)
            writer.writerow(
                (
                    *account,
                    end,
                    neutralise(names.closing),
                    "",
                    "",
                    plain(section.total_debit, currency),
                    plain(section.total_credit, currency),
                    plain(section.closing, currency),
                )
            )
            aging = neutralise(names.aging)
            for bucket, amount in zip(
                (*names.buckets, names.total), aging_values(section.aging), strict=True
            ):
                writer.writerow(
                    (*account, end, aging, "", neutralise(bucket), "", "", plain(amount, currency))
                )
        text.flush()
    finally:
        text.detach()  # the caller's stream stays open
    progress(written)
