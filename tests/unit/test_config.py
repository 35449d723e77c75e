from __future__ import annotations

import ast
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal import config
from portal.config import ConfigError, Settings
from portal.services.money import format_money, to_minor

PRODUCTION = {
    "PORTAL_ENV": "production",
    "SECRET_KEY": "k" * 40,
    "PUBLIC_URL": "https://billing.example.com",
    "PAYMENT_GATEWAY": "sandbox",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


@pytest.fixture(autouse=True)
def instance_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Development's key file goes to a folder of the test's own, not the checkout's."""
    folder = tmp_path / "instance"
    monkeypatch.setattr(config, "INSTANCE_DIR", folder)
    yield folder


def test_production_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env({**PRODUCTION, "SECRET_KEY": ""})
    with pytest.raises(ConfigError, match="32 characters"):
        Settings.from_env({**PRODUCTION, "SECRET_KEY": "short"})


def test_production_keeps_its_own_secret() -> None:
    settings = Settings.from_env(PRODUCTION)
    assert settings.secret_key == "k" * 40 and settings.is_production


def test_production_refuses_to_start_without_public_url() -> None:
    """Links in mail come from PUBLIC_URL only: without it production does not start, and says
    what to set, with an example."""
    for value in ("", "http://billing.example.com"):
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({**PRODUCTION, "PUBLIC_URL": value})
        message = str(refused.value)
        assert "PUBLIC_URL" in message and "PUBLIC_URL=https://billing.example.com" in message


def test_production_refuses_to_start_without_redis_and_mail_timeout_must_be_a_number() -> None:
    """Without REDIS_URL no work would reach a worker: production says so at start-up."""
    with pytest.raises(ConfigError, match="REDIS_URL must be set in production"):
        Settings.from_env({**PRODUCTION, "REDIS_URL": ""})
    assert Settings.from_env({"PORTAL_ENV": "development"}).redis_url == ""
    assert Settings.from_env({**PRODUCTION, "MAIL_TIMEOUT": "2.5"}).mail_timeout == 2.5
    with pytest.raises(ConfigError, match="MAIL_TIMEOUT must be a number of seconds"):
        Settings.from_env({**PRODUCTION, "MAIL_TIMEOUT": "soon"})


def test_production_refuses_to_start_without_a_chosen_gateway() -> None:
    with pytest.raises(ConfigError, match="PAYMENT_GATEWAY must be set in production"):
        Settings.from_env({**PRODUCTION, "PAYMENT_GATEWAY": ""})
    assert Settings.from_env(PRODUCTION).payment_gateway == "sandbox"  # when said explicitly
    assert Settings.from_env({"PORTAL_ENV": "development"}).payment_gateway == "sandbox"


def test_development_makes_a_random_key_once_and_keeps_it(instance_dir: Path) -> None:
    first = Settings.from_env({"PORTAL_ENV": "development"}).secret_key
    again = Settings.from_env({"PORTAL_ENV": "development"}).secret_key  # a restart
    key_file = instance_dir / "secret_key"
    assert first == again == key_file.read_text().strip()
    assert len(first) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in instance_dir.iterdir()] == ["secret_key"]  # no temporary left


def test_every_checkout_gets_a_key_of_its_own(tmp_path: Path) -> None:
    keys = {config.instance_secret(tmp_path / name) for name in ("one", "two", "three")}
    assert len(keys) == 3


def test_a_key_file_readable_by_others_is_made_private(instance_dir: Path) -> None:
    key = config.instance_secret(instance_dir)
    (instance_dir / "secret_key").chmod(0o644)
    assert config.instance_secret(instance_dir) == key
    assert stat.S_IMODE((instance_dir / "secret_key").stat().st_mode) == 0o600


def test_an_unusable_key_file_is_refused(instance_dir: Path) -> None:
    instance_dir.mkdir()
    (instance_dir / "secret_key").write_text("short\n")
    with pytest.raises(ConfigError, match="delete it"):
        Settings.from_env({"PORTAL_ENV": "development"})


def test_tests_without_a_key_get_a_random_one_per_process() -> None:
    here = Settings.from_env({"PORTAL_ENV": "testing"}).secret_key
    assert here == Settings.from_env({"PORTAL_ENV": "testing"}).secret_key and len(here) >= 32
    code = (
        "from portal.config import Settings; "
        "print(Settings.from_env({'PORTAL_ENV': 'testing'}).secret_key)"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(other) >= 32 and other != here


def test_no_secret_is_a_constant_in_the_source() -> None:
    """Nothing in portal/ assigns a string literal to a name that says key or secret (the old
    development key was one, and it signed the sandbox's webhooks). The demo users' TOTP secret
    is public by design (the contract prints it)."""
    public = {"seed.py: DEMO_TOTP_SECRET"}
    root = Path(config.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                value = node.value.value
                for target in node.targets:
                    name = target.id if isinstance(target, ast.Name) else ""
                    if (
                        isinstance(value, str)
                        and len(value) >= 16
                        and ("SECRET" in name.upper() or name.upper().endswith("KEY"))
                    ):
                        found.append(f"{path.name}: {name}")
    assert set(found) == public


def test_secret_key_fallbacks_are_read_newest_first() -> None:
    old, older = "o" * 40, "p" * 40
    settings = Settings.from_env(
        {**PRODUCTION, "SECRET_KEY_FALLBACKS": f" {old} ,{older},,{old},{'k' * 40}"}
    )
    assert settings.secret_key_fallbacks == (
        old,
        older,
    )  # blanks, repeats and the current key dropped
    assert settings.keyring.all == ("k" * 40, old, older)
    with pytest.raises(ConfigError, match="SECRET_KEY_FALLBACKS"):
        Settings.from_env({**PRODUCTION, "SECRET_KEY_FALLBACKS": "short"})


def test_a_short_metrics_token_is_refused_in_production() -> None:
    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        Settings.from_env({**PRODUCTION, "METRICS_TOKEN": "guessable"})
    assert Settings.from_env({**PRODUCTION, "METRICS_TOKEN": "m" * 40}).metrics_token


def test_unknown_gateway_and_stripe_without_key_are_refused() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"PORTAL_ENV": "development", "PAYMENT_GATEWAY": "paypal"})
    with pytest.raises(ConfigError, match="STRIPE_SECRET_KEY"):
        Settings.from_env({"PORTAL_ENV": "development", "PAYMENT_GATEWAY": "stripe"})
    stripe = {"PAYMENT_GATEWAY": "stripe", "STRIPE_SECRET_KEY": "sk_test_x"}
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
        Settings.from_env({"PORTAL_ENV": "development", **stripe})
    production = {**PRODUCTION, "PUBLIC_URL": "", "STRIPE_WEBHOOK_SECRET": "whsec_x", **stripe}
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        Settings.from_env(production)
    https = Settings.from_env({**production, "PUBLIC_URL": "https://billing.example.com"})
    assert https.public_url == "https://billing.example.com"


def test_public_url_must_name_a_host() -> None:
    for bad in ("https://", "billing.example.com", "ftp://billing.example.com"):
        with pytest.raises(ConfigError, match="PUBLIC_URL"):
            Settings.from_env({"PORTAL_ENV": "development", "PUBLIC_URL": bad})


def test_public_url_defaults_to_where_development_serves() -> None:
    assert Settings.from_env({"PORTAL_ENV": "development", "PORT": "5055"}).public_url == (
        "http://127.0.0.1:5055"
    )


@pytest.mark.parametrize(
    ("minor", "currency", "locale", "expected"),
    [
        (123456, "USD", "en_US", "$1,234.56"),
        (123456, "EUR", "de_DE", "1.234,56\xa0€"),
        (1234, "JPY", "en_US", "¥1,234"),
    ],
)
def test_money_is_formatted_for_locale_and_currency(
    minor: int, currency: str, locale: str, expected: str
) -> None:
    assert format_money(minor, currency, locale) == expected


def test_minor_units_refuse_fractions_of_a_cent() -> None:
    from decimal import Decimal

    assert to_minor(Decimal("12.34"), "USD") == 1234
    with pytest.raises(ValueError, match="decimals"):
        to_minor(Decimal("12.345"), "USD")
