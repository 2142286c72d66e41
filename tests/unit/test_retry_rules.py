"""The retry rules: classification, backoff with jitter, tier choice, dead-lettering."""

from __future__ import annotations

import random

import pytest

from services.publisher.platforms.base import PermanentPlatformError, TransientPlatformError
from shared.retry import (
    Disposition,
    PermanentError,
    RetryableError,
    TimeLimitExceeded,
    backoff_delay,
    choose_tier,
    decide,
    is_transient,
)
from shared.topics import parse_tiers

TIERS = parse_tiers("1m:60,5m:300,30m:1800")


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return 0.0


def test_tiers_parse_sorted_and_reject_garbage() -> None:
    assert [t.name for t in parse_tiers("30m:1800,1m:60")] == ["1m", "30m"]
    with pytest.raises(ValueError, match="bad retry tier"):
        parse_tiers("1m")


@pytest.mark.parametrize(
    ("wanted", "tier"), [(0, "1m"), (60, "1m"), (61, "5m"), (300, "5m"), (5000, "30m")]
)
def test_smallest_tier_not_shorter_than_the_wanted_delay(wanted: float, tier: str) -> None:
    assert choose_tier(TIERS, wanted).name == tier


def test_backoff_grows_per_attempt_within_jitter() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(a, 60, rng=rng) for a in (1, 2, 3)]
    assert 45 <= delays[0] <= 75
    assert 90 <= delays[1] <= 150
    assert 180 <= delays[2] <= 300


def test_classification() -> None:
    assert is_transient(RetryableError("x"))
    assert is_transient(TimeLimitExceeded("slow"))
    assert is_transient(TransientPlatformError("5xx"))
    assert is_transient(ConnectionError())
    assert not is_transient(PermanentError("bad"))
    assert not is_transient(PermanentPlatformError("invalid parameter", code=100))
    assert not is_transient(ValueError("bug"))


def test_transient_error_retries_until_max_retries_then_dead_letters() -> None:
    exc = RetryableError("flaky")
    first = decide(exc, attempt=1, max_retries=3, retry_delay=60, tiers=TIERS, rng=NoJitter())
    assert first.disposition is Disposition.RETRY and first.tier is not None
    assert first.tier.name == "1m"
    third = decide(exc, attempt=3, max_retries=3, retry_delay=60, tiers=TIERS, rng=NoJitter())
    assert third.disposition is Disposition.RETRY and third.tier is not None
    assert third.tier.name == "5m"
    exhausted = decide(exc, attempt=4, max_retries=3, retry_delay=60, tiers=TIERS)
    assert exhausted.disposition is Disposition.DEAD and exhausted.transient


def test_platform_retry_after_is_honoured() -> None:
    exc = TransientPlatformError("rate limited", retry_after=200)
    decision = decide(exc, attempt=1, max_retries=3, retry_delay=1, tiers=TIERS)
    assert decision.tier is not None and decision.tier.name == "5m"


def test_permanent_error_goes_straight_to_the_dead_letters() -> None:
    decision = decide(PermanentError("no"), attempt=1, max_retries=3, retry_delay=60, tiers=TIERS)
    assert decision.disposition is Disposition.DEAD and not decision.transient
