"""The sandbox's fault rules: matching, rates, counts and the environment default."""

from __future__ import annotations

import pytest

from services.sandbox.faults import FaultInjector, FaultRule


def test_rule_matches_its_platform_and_operation_or_wildcard() -> None:
    faults = FaultInjector()
    faults.add(FaultRule(platform="meta", operation="create_ad", kind="permanent"))
    assert faults.draw("meta", "create_ad") is not None
    assert faults.draw("meta", "create_campaign") is None
    assert faults.draw("google", "create_ad") is None
    faults.add(FaultRule(platform="google", operation="*", kind="transient"))
    assert faults.draw("google", "search") is not None


def test_count_bounds_how_often_a_rule_fires() -> None:
    faults = FaultInjector()
    faults.add(FaultRule(platform="meta", kind="transient", count=2))
    assert [faults.draw("meta", "read") is not None for _ in range(4)] == [True, True, False, False]


def test_rate_is_reproducible_from_the_seed() -> None:
    def draws(seed: int) -> list[bool]:
        faults = FaultInjector(seed)
        faults.add(FaultRule(platform="meta", kind="transient", rate=0.1))
        return [faults.draw("meta", "read") is not None for _ in range(2000)]

    assert draws(7) == draws(7)
    assert 140 <= sum(draws(7)) <= 260  # ~10 %


def test_rules_from_the_environment_and_bad_rates_refused() -> None:
    faults = FaultInjector.from_env('[{"platform": "google", "kind": "latency", "latency_ms": 5}]')
    rule = faults.draw("google", "search")
    assert rule is not None and rule.latency_ms == 5
    with pytest.raises(ValueError, match="rate"):
        faults.add(FaultRule(platform="meta", rate=1.5))
    faults.clear()
    assert faults.rules() == []
