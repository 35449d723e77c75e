"""What the property-based suites (test_any_input.py, test_any_webhook.py) throw at the app:
text, numbers and dates of every shape, and the settings that keep CI deterministic.

CI runs a fixed, derandomized set of examples. Locally, PORTAL_FUZZ_EXAMPLES=500 runs that many
per case with fresh randomness and remembers failing examples in .hypothesis/.
"""

from __future__ import annotations

import hashlib
import os
from datetime import date

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from sqlalchemy import Connection

from portal.db import Base

LOCAL_EXAMPLES = int(os.environ.get("PORTAL_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=LOCAL_EXAMPLES or 6,
    deadline=None,
    derandomize=not LOCAL_EXAMPLES,  # CI: the same examples on every run
    database=DirectoryBasedExampleDatabase(".hypothesis/examples") if LOCAL_EXAMPLES else None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # each example rolls back its own savepoint
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
    print_blob=True,
)

# What people (and scripts) type where a value is expected.
ODD = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\r\n",
    "\x1b[31m",
    "\u202e",  # right-to-left override
    "\ufeff",
    "💸",
    "Ω≈ç√",
    "null",
    "None",
    "undefined",
    "true",
    "[]",
    "{}",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "%",
    "_",
    "%00",
    "../../etc/passwd",
    "\\",
    "//evil.example",
    "/\\evil.example",
    "//[",
    "http://[::1",
    "https://evil.example/",
    "javascript:alert(1)",
    "/portal/invoices",
    "\u0661\u0662\u0663",
    "\uff11\uff12\uff13",
]
NUMBER_SPELLINGS = [
    "0",
    "-0",
    "0.00",
    "0.001",
    "1",
    "1.00",
    "0.01",
    "100",
    "125.00",
    "5000",
    "12.345",
    "-5",
    "999999999999.99",
    "1000000000000",
    "1" * 27,
    "9" * 400,
    "9" * 5000,
    "Infinity",
    "-Infinity",
    "inf",
    "NaN",
    "nan",
    "sNaN",
    "-sNaN",
    "1e26",
    "1e309",
    "1E+999999999",
    "1e-999999999",
    "0x10",
    "1_000",
    "1,234.56",
    "1.234,56",
    "1 234,56",
    "1\u202f234,56",
    "1'234.56",
    "1,2,3",
    "$ 20",
    "20 €",
    "\u066b\u0665",
    "\uff11\uff12\uff13",
]
DATE_SPELLINGS = [
    "0001-01-01",
    "9999-12-31",
    "1999-12-31",
    "2000-01-01",
    "2099-12-31",
    "2100-01-01",
    "2026-02-29",
    "2026-02-30",
    "2026-13-01",
    "0000-00-00",
    "+10000-01-01",
    "-2026-01-01",
    "20260101",
    "2026-W01-1",
    "2026-1-1",
    "31/12/2026",
    "2026-12-31T00:00:00",
    "1970-01-01",
]

NEXT = [
    "/portal/invoices",
    "/portal/payment?invoice=x",
    "//evil.example",
    "/\\evil.example",
    "//[",
    "http://[::1",
    "https://evil.example/",
    "javascript:alert(1)",
    "/a\r\nSet-Cookie: x=1",
    "/\x00",
    "",
]

_CHARS = st.characters(codec="utf-8")  # everything but lone surrogates (not encodable)
TEXT = st.one_of(
    st.text(_CHARS, max_size=30),
    st.text(st.characters(max_codepoint=0x1F), max_size=8),  # control characters, NUL
    st.sampled_from(ODD),
    st.builds(  # very long
        lambda piece, times: piece * times,
        st.sampled_from(["a", "9", "é", "💸", "\x00", " ", "-"]),
        st.integers(1000, 20_000),
    ),
)
NUMBERS = st.one_of(
    st.sampled_from(NUMBER_SPELLINGS),
    st.integers().map(str),
    st.integers(-(10**40), 10**40).map(str),
    st.floats().map(repr),
    st.floats().map(lambda f: f"{f:e}"),
    st.decimals().map(str),
    st.tuples(st.integers(0, 10**15), st.integers(0, 99), st.sampled_from(",. '\u202f")).map(
        lambda t: f"{t[0]:,}".replace(",", t[2]) + ("," if t[2] == "." else ".") + f"{t[1]:02d}"
    ),
)
DATES = st.one_of(
    st.sampled_from(DATE_SPELLINGS),
    st.dates().map(date.isoformat),
    st.from_regex(r"\A-?\d{1,6}-\d{1,3}-\d{1,3}\Z"),
)
ANY = st.one_of(TEXT, NUMBERS, DATES)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def digest(connection: Connection) -> dict[str, str]:
    """A fingerprint of every table's rows (all companies), per table: cheap enough to take
    after every example (a statement per table, no ORM)."""
    if connection.dialect.name == "postgresql":  # row-level security: see every company
        connection.exec_driver_sql("SELECT set_config('app.system', 'on', true)")
    fingerprints = {}
    for table in Base.metadata.sorted_tables:
        order = ", ".join(column.name for column in table.primary_key.columns)
        rows = connection.exec_driver_sql(f"SELECT * FROM {table.name} ORDER BY {order}")
        fingerprints[table.name] = hashlib.sha256(repr(rows.fetchall()).encode()).hexdigest()
    return fingerprints
