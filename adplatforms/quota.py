"""Platform quotas as every adapter consults them before a call: the throttle table of blocked
platform accounts (filled from this process's own platform answers and from the
`platform.throttled` broadcast, adplatforms/quota_broadcast.py), the reading of the
platforms' throttling signals, and the optional calls-per-second limit per account, shared
among the live workers (docs/platforms.md, rate limits)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from adplatforms.base import PlatformBlocked, PlatformError
from shared import metrics

# Longest a call waits in its lane for a token of the calls-per-second limit; a longer wait
# defers its record instead, so a lane is never held for long.
MAX_PACING_WAIT = 1.0
# A block is announced again only when it moves the known end by more than this (the calls in
# flight when a block starts all bring it back, a few milliseconds later each).
ANNOUNCE_SLACK = 1.0
USAGE_MEASURES = ("call_count", "total_time", "total_cputime")


@dataclass(frozen=True)
class Block:
    """A platform account that takes no call until `until` (Unix time)."""

    platform: str
    account: str
    until: float
    reason: str = ""


@dataclass(frozen=True)
class MetaUsage:
    """What Meta's `x-business-use-case-usage` header says of one ad account: the largest
    usage percentage per measure, and the wait it asks for (0: none)."""

    percentages: dict[str, float]
    block_seconds: float


def meta_usage(headers: Mapping[str, str]) -> MetaUsage | None:
    """Read the business-use-case header (JSON: `{account id: [{type, call_count, total_time,
    total_cputime, estimated_time_to_regain_access (minutes)}]}`); None when absent or
    unreadable."""
    raw = next((v for k, v in headers.items() if k.lower() == "x-business-use-case-usage"), None)
    if not raw:
        return None
    try:
        entries = [entry for per_account in json.loads(raw).values() for entry in per_account]
        percentages = {
            measure: max(float(e.get(measure, 0) or 0) for e in entries)
            for measure in USAGE_MEASURES
        }
        minutes = max(float(e.get("estimated_time_to_regain_access", 0) or 0) for e in entries)
    except (ValueError, TypeError, AttributeError):
        return None
    return MetaUsage(percentages, max(minutes, 0.0) * 60)


def meta_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds Meta asks us to wait: `Retry-After`, else the largest
    `estimated_time_to_regain_access` of the usage header; None when it asks for none."""
    retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), "")
    if retry_after.strip().isdigit():
        return float(retry_after)
    usage = meta_usage(headers)
    return usage.block_seconds if usage is not None and usage.block_seconds > 0 else None


def signalled_wait(error: PlatformError) -> float | None:
    """The block an error signals: a transient error that says how long to wait (Meta's
    `Retry-After` or regain time, Google's quota `retry_delay`). Adapters set `retry_after`
    only from those signals, so any other transient error blocks nothing."""
    if not error.transient or isinstance(error, PlatformBlocked):
        return None
    return error.retry_after if error.retry_after and error.retry_after > 0 else None


class ThrottleTable:
    """Blocked platform accounts of this process (thread-safe). A block only ever grows: a
    shorter signal for an account already blocked longer changes nothing."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._blocks: dict[tuple[str, str], Block] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def block(self, block: Block) -> bool:
        """Record `block`; True when it extends what was known."""
        key = (block.platform, block.account)
        with self._lock:
            known = self._blocks.get(key)
            if known is not None and known.until >= block.until:
                return False
            self._blocks[key] = block
        metrics.PLATFORM_THROTTLED_UNTIL.labels(block.platform, block.account).set(block.until)
        return True

    def remaining(self, platform: str, account: str) -> float:
        """Seconds the account stays blocked (0: not blocked)."""
        with self._lock:
            known = self._blocks.get((platform, account))
        return max(0.0, known.until - self._clock()) if known is not None else 0.0

    def blocks(self) -> list[Block]:
        """Every account blocked now or before, newest block first."""
        with self._lock:
            return sorted(self._blocks.values(), key=lambda b: b.until, reverse=True)


class TokenBucket:
    """`rate` calls per second with bursts of up to one second's worth (at least one call)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate = rate
        self._tokens = self.capacity
        self._at = clock()
        self._lock = threading.Lock()

    @property
    def capacity(self) -> float:
        return max(self._rate, 1.0)

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self._refill()
            self._rate = rate
            self._tokens = min(self._tokens, self.capacity)

    def take(self) -> float:
        """Take a token: 0 when one was free, else the seconds until one will be (none taken)."""
        with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self._rate

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now


class PlatformQuota:
    """What an adapter consults before each call and tells after each throttling answer.

    `announce` broadcasts a block this process learned first to every other worker;
    `limits` is calls per second per platform (its configured account), divided by
    `workers()`, the live workers sharing it."""

    def __init__(
        self,
        table: ThrottleTable | None = None,
        *,
        announce: Callable[[Block], None] | None = None,
        limits: Mapping[str, float] | None = None,
        workers: Callable[[], int] = lambda: 1,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table or ThrottleTable()
        self._announce = announce
        self._limits = {p: rate for p, rate in (limits or {}).items() if rate > 0}
        self._workers = workers
        self._sleep = sleep
        self._monotonic = monotonic
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def admit(self, platform: str, account: str) -> None:
        """Return when a call may go out; raise PlatformBlocked while the account is blocked
        or its calls-per-second share has no token within MAX_PACING_WAIT."""
        self.check(platform, account)
        bucket = self._bucket(platform, account)
        if bucket is None:
            return
        while (wait := bucket.take()) > 0:
            if wait > MAX_PACING_WAIT:
                metrics.PLATFORM_DEFERRED.labels(platform, account).inc()
                raise PlatformBlocked(
                    f"{platform} account {account} is at its calls-per-second limit",
                    delay=wait,
                )
            self._sleep(wait)

    def check(self, platform: str, account: str) -> None:
        """Raise PlatformBlocked while the account is blocked (before a flow's first step, so
        a deferred publish marks no step as attempted)."""
        remaining = self.table.remaining(platform, account)
        if remaining > 0:
            metrics.PLATFORM_DEFERRED.labels(platform, account).inc()
            raise PlatformBlocked(
                f"{platform} account {account} is throttled for {remaining:.1f}s more",
                delay=remaining,
            )

    def signalled(self, platform: str, account: str, seconds: float, reason: str) -> None:
        """The platform asked for `seconds` of quiet on `account`: block it here, and tell
        every other worker when that is news."""
        block = Block(platform, account, time.time() + seconds, reason)
        left = self.table.remaining(platform, account)
        news = left == 0 or block.until - (time.time() + left) > ANNOUNCE_SLACK
        if self.table.block(block) and news and self._announce is not None:
            self._announce(block)

    def observe(self, platform: str, account: str, error: PlatformError) -> None:
        """A failed call: block its account if the error signals a wait."""
        wait = signalled_wait(error)
        if wait is not None:
            reason = f"{error.code or type(error).__name__}: {error.message}"[:200]
            self.signalled(platform, account, wait, reason)

    def observe_meta_headers(self, account: str, headers: Mapping[str, str]) -> None:
        """Any Meta answer, success included: record the usage it reports, and block the
        account when it asks for a wait."""
        usage = meta_usage(headers)
        if usage is None:
            return
        for measure, percent in usage.percentages.items():
            metrics.PLATFORM_USAGE.labels("meta", account, measure).set(percent)
        wait = meta_wait(headers)
        if wait is not None:
            self.signalled("meta", account, wait, "x-business-use-case-usage")

    def _bucket(self, platform: str, account: str) -> TokenBucket | None:
        limit = self._limits.get(platform)
        if limit is None:
            return None
        rate = limit / max(1, self._workers())
        with self._lock:
            bucket = self._buckets.get((platform, account))
            if bucket is None:
                bucket = self._buckets[(platform, account)] = TokenBucket(rate, self._monotonic)
        bucket.set_rate(rate)
        return bucket


def remaining_of(block: Block, now: float | None = None) -> float:
    """Seconds `block` still holds (0 once over), rounded up to the tenth."""
    left = block.until - (time.time() if now is None else now)
    return math.ceil(left * 10) / 10 if left > 0 else 0.0
