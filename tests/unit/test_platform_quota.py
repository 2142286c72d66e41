"""Platform quotas: reading Meta's and Google's throttling signals, the throttle table, the
calls-per-second share, and a blocked call deferred without using an attempt."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adplatforms.base import PermanentPlatformError, PlatformBlocked, TransientPlatformError
from adplatforms.quota import (
    MAX_PACING_WAIT,
    Block,
    PlatformQuota,
    ThrottleTable,
    TokenBucket,
    meta_usage,
    meta_wait,
    signalled_wait,
)
from shared import metrics
from shared import retry as rules
from shared.envelope import new_event
from shared.events import JobOpening, PublishRequested
from shared.producer import OutgoingRecord
from shared.runtime.failures import FailureRouter
from shared.runtime.records import ConsumedRecord
from shared.tasks import TaskStatusReporter
from shared.topics import TopicNames


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def usage_header(*entries: Mapping[str, float]) -> dict[str, str]:
    return {"X-Business-Use-Case-Usage": json.dumps({"1000": list(entries)})}


def gauge(metric: object, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())  # type: ignore[attr-defined]


# --- signals -----------------------------------------------------------------------------------


def test_meta_usage_reads_the_largest_percentages_and_the_regain_time_in_minutes() -> None:
    usage = meta_usage(
        usage_header(
            {"call_count": 40, "total_time": 95, "total_cputime": 10},
            {"call_count": 100, "total_time": 5, "estimated_time_to_regain_access": 3},
        )
    )
    assert usage is not None
    assert usage.percentages == {"call_count": 100, "total_time": 95, "total_cputime": 10}
    assert usage.block_seconds == 180


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-business-use-case-usage": "not json"}, {"x-business-use-case-usage": "[1, 2]"}],
)
def test_meta_usage_absent_or_unreadable_is_none(headers: dict[str, str]) -> None:
    assert meta_usage(headers) is None


def test_meta_wait_prefers_retry_after_then_the_regain_time() -> None:
    regain = {"call_count": 100, "estimated_time_to_regain_access": 0.5}
    assert meta_wait({"Retry-After": "7", **usage_header(regain)}) == 7
    assert meta_wait(usage_header(regain)) == 30
    assert meta_wait(usage_header({"call_count": 80, "estimated_time_to_regain_access": 0})) is None
    assert meta_wait({"retry-after": "soon"}) is None


def test_only_a_transient_error_that_says_how_long_signals_a_block() -> None:
    assert signalled_wait(TransientPlatformError("quota", code="quota_error", retry_after=12)) == 12
    assert signalled_wait(TransientPlatformError("503", http_status=503)) is None
    assert signalled_wait(PermanentPlatformError("bad", retry_after=5)) is None
    # Our own refusal to call is not the platform's signal: it must not extend the block.
    assert signalled_wait(PlatformBlocked("blocked", delay=4)) is None


# --- the throttle table ------------------------------------------------------------------------


def test_a_block_only_grows_and_ends_at_its_time() -> None:
    clock = Clock()
    table = ThrottleTable(clock)
    assert table.block(Block("meta", "act_1", clock.now + 10, "first"))
    assert not table.block(Block("meta", "act_1", clock.now + 5, "shorter"))
    assert table.remaining("meta", "act_1") == 10
    assert table.remaining("meta", "act_2") == 0 and table.remaining("google", "act_1") == 0
    assert gauge(metrics.PLATFORM_THROTTLED_UNTIL, "meta", "act_1") == clock.now + 10
    clock.now += 10
    assert table.remaining("meta", "act_1") == 0
    assert [b.reason for b in table.blocks()] == ["first"]


def test_a_blocked_account_raises_a_deferral_with_the_time_left_and_counts_it() -> None:
    table = ThrottleTable()
    quota = PlatformQuota(table)
    before = gauge(metrics.PLATFORM_DEFERRED, "google", "123")
    quota.signalled("google", "123", 30, "quota_error")
    with pytest.raises(PlatformBlocked) as raised:
        quota.admit("google", "123")
    assert 29 < raised.value.delay <= 30 and raised.value.transient
    assert gauge(metrics.PLATFORM_DEFERRED, "google", "123") == before + 1
    quota.admit("meta", "123")  # another platform's account is not blocked


def test_a_block_is_announced_once_when_it_is_news() -> None:
    announced: list[Block] = []
    quota = PlatformQuota(announce=announced.append)
    error = TransientPlatformError("too many", code="quota_error", retry_after=20)
    quota.observe("google", "123", error)
    quota.observe("google", "123", TransientPlatformError("same", retry_after=1))
    quota.observe("google", "123", TransientPlatformError("no wait stated"))
    assert [(b.platform, b.account) for b in announced] == [("google", "123")]
    assert "too many" in announced[0].reason


def test_a_successful_meta_answer_with_a_regain_time_blocks_and_reports_usage() -> None:
    quota = PlatformQuota()
    quota.observe_meta_headers("act_9", usage_header({"call_count": 62, "total_time": 12}))
    quota.admit("meta", "act_9")
    assert gauge(metrics.PLATFORM_USAGE, "meta", "act_9", "call_count") == 62
    regain = {"call_count": 100, "estimated_time_to_regain_access": 1}
    quota.observe_meta_headers("act_9", usage_header(regain))
    with pytest.raises(PlatformBlocked) as raised:
        quota.admit("meta", "act_9")
    assert 59 < raised.value.delay <= 60


# --- calls per second --------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate_and_bursts_one_second() -> None:
    clock = Clock()
    bucket = TokenBucket(4, clock)
    assert [bucket.take() for _ in range(4)] == [0, 0, 0, 0]
    assert bucket.take() == pytest.approx(0.25)
    clock.now += 0.5
    assert [bucket.take() for _ in range(3)] == [0, 0, pytest.approx(0.25)]


def test_the_limit_is_shared_among_live_workers_and_a_long_wait_defers() -> None:
    clock, waits, workers = Clock(), list[float](), [2]

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    quota = PlatformQuota(
        limits={"meta": 2}, workers=lambda: workers[0], sleep=sleep, monotonic=clock
    )
    quota.admit("meta", "act_1")  # 1 call/s each: the first is free
    quota.admit("meta", "act_1")  # the next waits a second in its lane
    assert waits == [pytest.approx(1.0)]
    workers[0] = 8  # 0.25 call/s each: the next token is 4 s away, deferred at once
    waits.clear()
    with pytest.raises(PlatformBlocked) as raised:
        quota.admit("meta", "act_1")
    assert waits == [] and raised.value.delay > MAX_PACING_WAIT
    quota.admit("google", "1")  # no limit set for Google


# --- deferral in the retry rules and the failure router ---------------------------------------


TIERS = TopicNames().tiers


def test_a_deferral_is_retried_after_its_delay_even_with_no_attempt_left() -> None:
    decision = rules.decide(
        PlatformBlocked("blocked", delay=12.5),
        attempt=4,
        max_retries=3,
        retry_delay=60,
        tiers=TIERS,
    )
    assert decision.disposition is rules.Disposition.RETRY
    assert decision.delay == 12.5 and decision.tier is not None and decision.tier.name == "5s"
    assert not decision.uses_attempt
    exhausted = rules.decide(
        TransientPlatformError("x"), attempt=4, max_retries=3, retry_delay=60, tiers=TIERS
    )
    assert exhausted.disposition is rules.Disposition.DEAD


def test_the_failure_router_defers_a_blocked_record_with_the_same_attempt() -> None:
    names = TopicNames("t-")
    command = PublishRequested(
        campaign_id="c-1",
        platform="meta",
        name="n",
        daily_budget=Decimal("10"),
        currency="EUR",
        job=JobOpening(title="t", company="c", url="https://x.example"),
    )
    envelope = new_event(command, source="gw", subject="c-1", taskid="task-1", attempt=2)
    sent = OutgoingRecord.of(names.topic("campaign.publish_requested"), envelope)
    record = ConsumedRecord(sent.topic, 0, 5, sent.key, sent.value, list(sent.headers), 0)
    router = FailureRouter("publisher", "g", names, TaskStatusReporter(names, "publisher"), 3, 60)
    before = datetime.now(UTC).timestamp() * 1000
    out = router.failed(
        record, envelope, command, command, PlatformBlocked("blocked", delay=8), None
    )
    retry, status = out
    assert retry.topic == names.retry("campaign.publish_requested", TIERS[1])  # the 5s tier
    headers = dict(retry.headers)
    assert headers[rules.H_ATTEMPT] == b"2"
    due = int(headers[rules.H_DUE_AT])
    assert before + 7900 <= due <= before + 9000
    assert status.topic == names.topic("task.status") and b'"RETRY"' in (status.value or b"")
