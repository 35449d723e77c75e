"""docs/operations.md stays true to the code: its Configuration table names every environment
variable `Settings.from_env` reads, and "yes" in its third column is exactly what production
refuses to start without."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

import pytest

from portal.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent.parent
DOC = ROOT / "docs" / "operations.md"
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| (.*?) \| (.*?) \| (.*?) \|$")


def section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def table() -> dict[str, tuple[str, str, str]]:
    rows: dict[str, tuple[str, str, str]] = {}
    for line in section("Configuration").splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3), match.group(4))
    return rows


def settings_env_names() -> set[str]:
    """Every environment variable's name `Settings.from_env` reads: the upper-case string
    constants in its source (environ.get("X"), the name mappings)."""
    source = textwrap.dedent(inspect.getsource(Settings.from_env))
    names = {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and ENV_NAME.match(node.value)
    }
    return names


def test_the_names_are_found_in_the_code() -> None:
    names = settings_env_names()
    # A few known ones, so a change in how they are read cannot empty the check below.
    assert {"SECRET_KEY", "DATABASE_URL", "PORT", "TRUSTED_PROXY_HOPS", "MAIL_TIMEOUT"} <= names
    assert len(names) >= 25


def test_every_setting_has_a_row_in_the_configuration_table() -> None:
    rows = table()
    missing = sorted(settings_env_names() - rows.keys())
    assert not missing, f"docs/operations.md Configuration lacks rows for {missing}"
    for name, (default, required, meaning) in rows.items():
        assert default and required and meaning, f"{name}'s row has an empty cell"


PRODUCTION_BASE = {
    "PORTAL_ENV": "production",
    "SECRET_KEY": "k" * 40,
    "PUBLIC_URL": "https://billing.example.com",
    "PAYMENT_GATEWAY": "sandbox",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}

VALID = {
    "STRIPE_SECRET_KEY": "sk_test_operations",
    "STRIPE_WEBHOOK_SECRET": "whsec_operations",
    "AR_WEBHOOK_URL": "https://ar.example.com/hooks",
    "AR_WEBHOOK_SECRET": "s" * 40,
}


@pytest.mark.parametrize("name", sorted(table()))
def test_required_in_production_says_what_production_refuses_to_start_without(name: str) -> None:
    required = table()[name][1]
    Settings.from_env(PRODUCTION_BASE)  # all of them: it starts
    without = {k: v for k, v in PRODUCTION_BASE.items() if k != name}
    if required.startswith("yes"):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env(without)
    elif required.startswith("no"):
        Settings.from_env(without)
        assert name not in PRODUCTION_BASE or name == "PORTAL_ENV"
    else:  # needed with another setting: "with `PAYMENT_GATEWAY=stripe`", "with `AR_WEBHOOK_URL`"
        condition = re.match(r"with `([A-Z_]+)(?:=([a-z]+))?`", required)
        assert condition, f"{name}: say yes, no or with what"
        other, value = condition.group(1), condition.group(2) or VALID[condition.group(1)]
        # The condition and everything else it needs: it starts; without this one it does not.
        peers = {n for n, row in table().items() if row[1].startswith(f"with `{other}")}
        complete = {**PRODUCTION_BASE, other: value, **{n: VALID[n] for n in peers}}
        Settings.from_env(complete)
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({k: v for k, v in complete.items() if k != name})


def test_the_guide_has_the_sections_operators_look_for() -> None:
    text = DOC.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    for wanted in (
        "Deploy",
        "Configuration",
        "Scale-out",
        "Backups and restore",
        "Key rotation",
        "Rollback",
    ):
        assert wanted in headings
    steps = re.findall(r"^\d+\. \*\*", section("Rollback"), flags=re.MULTILINE)
    assert len(steps) >= 5  # the numbered procedure
