from __future__ import annotations

import pytest

from portal.config import ConfigError, Settings
from portal.services.money import format_money, to_minor


def test_production_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env({"PORTAL_ENV": "production"})
    with pytest.raises(ConfigError, match="32 characters"):
        Settings.from_env({"PORTAL_ENV": "production", "SECRET_KEY": "short"})


def test_development_gets_a_throwaway_secret_and_production_keeps_its_own() -> None:
    assert Settings.from_env({"PORTAL_ENV": "development"}).secret_key
    key = "k" * 40
    settings = Settings.from_env({"PORTAL_ENV": "production", "SECRET_KEY": key})
    assert settings.secret_key == key and settings.is_production


def test_unknown_gateway_and_stripe_without_key_are_refused() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"PORTAL_ENV": "development", "PAYMENT_GATEWAY": "paypal"})
    with pytest.raises(ConfigError, match="STRIPE_SECRET_KEY"):
        Settings.from_env({"PORTAL_ENV": "development", "PAYMENT_GATEWAY": "stripe"})
    stripe = {"PAYMENT_GATEWAY": "stripe", "STRIPE_SECRET_KEY": "sk_test_x"}
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
        Settings.from_env({"PORTAL_ENV": "development", **stripe})
    production = {"SECRET_KEY": "k" * 40, "STRIPE_WEBHOOK_SECRET": "whsec_x", **stripe}
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
