"""The sandbox's fault rules: matching, rates, counts and the environment default."""

from __future__ import annotations

import pytest

from infra.waiting import wait_for
from services.sandbox.faults import FaultInjector, FaultRule


def test_rule_matches_its_platform_and_operation_or_wildcard() -> None:
    faults = FaultInjector()
    faults.add(FaultRule(platform="meta", operation="create_ad", kind="permanent"))
    assert faults.draw("meta", "create_ad") is not None
    assert faults.draw("meta", "create_campaign") is None
    assert faults.draw("google", "create_ad") is None
    faults.add(FaultRule(platform="google", operation="*", kind="transient"))
    assert faults.draw("google", "search") is not None


def test_a_call_bundling_operations_matches_a_rule_for_any_of_them_once() -> None:
    faults = FaultInjector()
    faults.add(FaultRule(platform="google", operation="mutate_ad_groups", count=1))
    assert faults.draw("google", "mutate", "mutate_campaigns") is None
    assert faults.draw("google", "mutate", "mutate_campaigns", "mutate_ad_groups") is not None
    faults.add(FaultRule(platform="google", operation="*", count=1))
    assert faults.draw("google", "mutate", "mutate_campaigns", "mutate_ad_groups") is not None
    assert faults.draw("google", "mutate", "mutate_campaigns", "mutate_ad_groups") is None


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


def test_a_throttle_rule_blocks_its_platform_and_counts_the_calls_during_the_block() -> None:
    faults = FaultInjector()
    faults.add(FaultRule(platform="meta", kind="throttle", block_seconds=0.3, count=1))
    first = faults.draw("meta", "create_campaign")
    assert first is not None and first.kind == "throttle" and first.block_seconds == 0.3
    during = faults.draw("meta", "list")
    assert during is not None and during.kind == "throttle" and 0 < during.block_seconds < 0.3
    assert faults.draw("google", "search") is None  # the other platform is not blocked
    assert faults.throttles()["meta"]["calls_during_block"] == 1
    wait_for(lambda: faults.throttles()["meta"]["remaining"] == 0, timeout=5, interval=0.05)
    assert faults.draw("meta", "list") is None
    report = faults.throttles()["meta"]
    assert report["calls_during_block"] == 1 and report["remaining"] == 0
    assert isinstance(report["first_call_after_block"], float)
    assert report["first_call_after_block"] >= report["until"]  # type: ignore[operator]


def test_only_a_latency_rule_that_can_still_fire_sends_calls_off_the_event_loop() -> None:
    faults = FaultInjector()
    faults.add(FaultRule(platform="meta", kind="transient"))
    assert not faults.may_delay("meta")
    faults.add(FaultRule(platform="google", kind="latency", latency_ms=5, count=1))
    assert faults.may_delay("google") and not faults.may_delay("meta")
    faults.draw("google", "mutate")  # its one firing
    assert not faults.may_delay("google")
