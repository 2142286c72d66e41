"""The retry rules: classification, backoff with jitter, tier choice, dead-lettering."""

from __future__ import annotations

import random

import pytest

from adplatforms.base import PermanentPlatformError, TransientPlatformError
from shared.retry import (
    Disposition,
    PermanentError,
    RetryableError,
    TimeLimitExceeded,
    backoff_delay,
    choose_tier,
    decide,
    hold_window,
    is_transient,
    resume_at,
)
from shared.topics import DelayTier, parse_tiers

TIERS = parse_tiers("1s:1,5s:5,15s:15,1m:60,5m:300,15m:900,1h:3600")


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return 0.0


def test_tiers_parse_sorted_and_reject_garbage() -> None:
    assert [t.name for t in parse_tiers("30m:1800,1m:60")] == ["1m", "30m"]
    with pytest.raises(ValueError, match="bad retry tier"):
        parse_tiers("1m")


@pytest.mark.parametrize(
    ("wanted", "tier"),
    [(0, "1s"), (1, "1s"), (4.9, "1s"), (5, "5s"), (64, "1m"), (299, "1m"), (5000, "1h")],
)
def test_largest_tier_not_longer_than_the_wanted_delay(wanted: float, tier: str) -> None:
    assert choose_tier(TIERS, wanted).name == tier


CANDIDATES = (0, 0.3, 0.75, 1, 2, 4.99, 5, 10, 14.9, 15, 59, 60, 299, 300, 899, 900, 3599)


@pytest.mark.parametrize("tier", TIERS[:-1], ids=lambda t: t.name)
def test_any_two_delays_of_one_tier_differ_by_less_than_its_hold_window(tier: DelayTier) -> None:
    """Any two records of one tier differ in delay by less than the tier's hold window, so
    the runtime can read a tier at `due - window` without finding a later record overdue. The
    first tier also takes delays shorter than its own (a jittered 1 s backoff is 0.75 s)."""
    same_tier = [w for w in CANDIDATES if choose_tier(TIERS, w) == tier]
    assert len(same_tier) >= 2
    spread = max(same_tier) - min(same_tier)
    assert spread < hold_window(TIERS, tier)


def test_a_paused_tier_is_read_again_before_a_record_written_after_the_pause_is_due() -> None:
    written, second = 1_000_000, 1000
    for tier in TIERS[:-1]:  # due - window comes first: the record is then within the window
        wanted = min(w for w in CANDIDATES if choose_tier(TIERS, w) == tier)
        longest = max(w for w in CANDIDATES if choose_tier(TIERS, w) == tier)
        due = written + int(longest * second)
        at = resume_at(TIERS, tier, due, written)
        assert at == due - int(hold_window(TIERS, tier) * second)
        assert at <= written + int(wanted * second)  # a later, shorter record is not overdue
    last = TIERS[-1]
    day = written + 86_400 * second  # an ETA a day ahead, in the last tier
    assert resume_at(TIERS, last, day, written) == written + 3600 * second
    assert resume_at(TIERS, last, day, -1) == day - 3600 * second  # no timestamp


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
    assert first.tier.name == "1m" and first.delay == 60
    third = decide(exc, attempt=3, max_retries=3, retry_delay=60, tiers=TIERS, rng=NoJitter())
    assert third.disposition is Disposition.RETRY and third.tier is not None
    assert third.tier.name == "1m" and third.delay == 240
    exhausted = decide(exc, attempt=4, max_retries=3, retry_delay=60, tiers=TIERS)
    assert exhausted.disposition is Disposition.DEAD and exhausted.transient


def test_platform_retry_after_is_honoured() -> None:
    exc = TransientPlatformError("rate limited", retry_after=200)
    decision = decide(exc, attempt=1, max_retries=3, retry_delay=1, tiers=TIERS)
    assert decision.tier is not None and decision.tier.name == "1m" and decision.delay == 200


def test_permanent_error_goes_straight_to_the_dead_letters() -> None:
    decision = decide(PermanentError("no"), attempt=1, max_retries=3, retry_delay=60, tiers=TIERS)
    assert decision.disposition is Disposition.DEAD and not decision.transient
