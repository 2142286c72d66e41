"""Budgets in each platform's units: Meta counts minor units (none for the yen), Google
micros; a currency that is not ISO 4217 is refused."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from adplatforms.base import PermanentPlatformError, in_micros, in_minor_units
from adplatforms.meta import WHOLE_UNIT_CURRENCIES
from shared.currencies import check_amount, check_currency
from shared.events import JobOpening, PublishRequested


@pytest.mark.parametrize(
    ("amount", "currency", "meta"),
    [
        ("25.50", "EUR", 2550),
        ("2500", "JPY", 2500),
        ("1.234", "KWD", 1234),
        ("50000", "KRW", 50000),
        ("1000.50", "COP", 1001),  # Meta counts COP in whole pesos
        ("10", "USD", 1000),
    ],
)
def test_meta_budgets_use_each_currencys_minor_units(amount: str, currency: str, meta: int) -> None:
    assert in_minor_units(Decimal(amount), currency, whole_units=WHOLE_UNIT_CURRENCIES) == meta


def test_google_budgets_are_micros_whatever_the_currency() -> None:
    assert in_micros(Decimal("25.50")) == 25_500_000
    assert in_micros(Decimal("2500")) == 2_500_000_000


def test_unknown_currencies_and_too_many_decimals_are_refused() -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        check_currency("XYZ")
    assert check_currency("JPY") == "JPY"
    with pytest.raises(ValueError, match="JPY has 0 decimal places"):
        check_amount(Decimal("25.50"), "JPY")
    assert check_amount(Decimal("25.50"), "EUR") == Decimal("25.50")
    assert check_amount(Decimal("2500.00"), "JPY") == Decimal("2500.00")
    with pytest.raises(PermanentPlatformError):
        in_minor_units(Decimal(1), "XYZ", whole_units=frozenset())


def test_a_publish_command_with_a_non_iso_currency_is_invalid() -> None:
    job = JobOpening(title="t", company="c", url="https://x.example")
    fields = {"campaign_id": "c", "platform": "meta", "name": "n", "daily_budget": "1", "job": job}
    assert PublishRequested(**fields, currency="EUR").currency == "EUR"  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="currency"):
        PublishRequested(**fields, currency="XYZ")  # type: ignore[arg-type]
