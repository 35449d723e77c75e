"""Looking for card data where it must never be: every text value in the database, and logs."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import Connection, String, Text, column, select, table

from portal.db import Base

# 13 to 19 digits, optionally grouped by spaces or dashes, as people type card numbers; not
# inside a longer token (a digest or a message id can hold a Luhn-valid run by chance).
_CANDIDATE = re.compile(r"(?<![0-9A-Za-z._])(?:\d[ -]?){12,18}\d(?![0-9A-Za-z_])")
CVC_MARKERS = re.compile(r"\b(?:cvc|cvv|cvv2|security[_ ]code)\b\W{0,3}\d{3,4}", re.IGNORECASE)


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_numbers_in(text: str) -> list[str]:
    found = []
    for match in _CANDIDATE.finditer(text):
        digits = re.sub(r"\D", "", match.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            found.append(digits)
    return found


def text_values(connection: Connection) -> Iterable[tuple[str, str, str]]:
    """(table, column, value) for every string-typed column of every table in the models."""
    for name, model_table in Base.metadata.tables.items():
        columns = [c.name for c in model_table.columns if isinstance(c.type, String | Text)]
        if not columns:
            continue
        rows = connection.execute(select(*(column(c) for c in columns)).select_from(table(name)))
        for row in rows:
            for col, value in zip(columns, row, strict=True):
                if isinstance(value, str) and value:
                    yield name, col, value


def leaks(connection: Connection, secrets: Iterable[str], logs: str = "") -> list[str]:
    """Everything that looks like card data, or contains one of `secrets`, in DB and logs."""
    secret_list = [s for s in secrets if s]
    problems = []
    for name, col, value in text_values(connection):
        for number in card_numbers_in(value):
            problems.append(f"{name}.{col}: card number {number}")
        if CVC_MARKERS.search(value):
            problems.append(f"{name}.{col}: security code")
        for secret in secret_list:
            if secret in value:
                problems.append(f"{name}.{col}: {secret}")
    for number in card_numbers_in(logs):
        problems.append(f"logs: card number {number}")
    if CVC_MARKERS.search(logs):
        problems.append("logs: security code")
    for secret in secret_list:
        if secret in logs:
            problems.append(f"logs: {secret}")
    return problems
