"""Fault injection for the sandbox: rules set over HTTP or the environment, drawn per call,
and the quota blocks a `throttle` rule starts (with the calls that arrive during each)."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, field
from dataclasses import dataclass as plain_dataclass
from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

FaultKind = Literal["transient", "rate_limit", "permanent", "latency", "throttle"]
# How a Meta block is signalled: the business-use-case usage header (regain time, in fractions
# of a minute so that a test can block for seconds: Meta states whole minutes) or Retry-After.
ThrottleSignal = Literal["business_use_case", "retry_after"]
MAX_REPORTED_CALLS = 1000  # call times listed per block in GET /_sandbox/throttles


@dataclass(config=ConfigDict(extra="forbid"))
class FaultRule:
    """One rule: `rate` of the calls to `operation` ('*' for all) on `platform` fail.

    `count` bounds how many times the rule fires (None: unbounded); `latency` rules delay the
    call by `latency_ms`; a `throttle` rule blocks the whole platform for `block_seconds`:
    that call and every one until the block ends get the platform's throttling answer with
    the time left (Meta: `signal`; Google: RESOURCE_EXHAUSTED with a quota retry delay).
    Validated on construction, so it is also the body of `POST /_sandbox/faults` and the
    items of `ADFLUX_SANDBOX_FAULTS`.
    """

    platform: Literal["meta", "google"]
    operation: str = Field(default="*", min_length=1)
    kind: FaultKind = "transient"
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    count: int | None = Field(default=None, ge=1)
    latency_ms: int = Field(default=0, ge=0, le=120_000)
    block_seconds: float = Field(default=10.0, gt=0, le=3600)
    signal: ThrottleSignal = "business_use_case"

    def matches(self, platform: str, operations: tuple[str, ...]) -> bool:
        """Whether the rule is for a call to `platform` that is any of `operations`."""
        return self.platform == platform and (self.operation == "*" or self.operation in operations)


@plain_dataclass
class QuotaBlock:
    """A platform blocked by a `throttle` rule, and what arrived while and after it held."""

    rule: FaultRule  # the throttle rule that started it
    started: float  # Unix time
    until: float
    calls_during: list[float] = field(default_factory=list)  # arrival times (Unix)
    first_call_after: float | None = None

    def report(self, now: float) -> dict[str, object]:
        return {
            "started": self.started,
            "until": self.until,
            "remaining": max(0.0, self.until - now),
            "signal": self.rule.signal,
            "calls_during_block": len(self.calls_during),
            "call_times_during_block": self.calls_during[:MAX_REPORTED_CALLS],
            "first_call_after_block": self.first_call_after,
        }


class FaultInjector:
    """Thread-safe set of fault rules with a seeded random source (reproducible runs)."""

    def __init__(self, seed: int = 0) -> None:
        self._rules: list[FaultRule] = []
        self._blocks: dict[str, QuotaBlock] = {}
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._blocks.clear()

    def rules(self) -> list[dict[str, object]]:
        with self._lock:
            return [asdict(rule) for rule in self._rules]

    def throttles(self) -> dict[str, dict[str, object]]:
        """Each platform's latest quota block: until when, calls that arrived during it, and
        when the first call after it came."""
        now = time.time()
        with self._lock:
            return {platform: block.report(now) for platform, block in self._blocks.items()}

    def may_delay(self, platform: str) -> bool:
        """Whether a latency rule could fire for a call to `platform` now."""
        with self._lock:
            return any(
                r.kind == "latency" and r.platform == platform and (r.count is None or r.count > 0)
                for r in self._rules
            )

    def draw(self, platform: str, operation: str, *inner: str) -> FaultRule | None:
        """The rule that fires for this call, if any (consumes one of its `count`): a rule
        for `operation`, for one of the `inner` operations the call carries (a request that
        bundles several), or for '*'. While a platform is blocked, every call gets a
        `throttle` rule with the time left."""
        now = time.time()
        with self._lock:
            block = self._blocks.get(platform)
            if block is not None and now < block.until:
                block.calls_during.append(now)
                return FaultRule(
                    platform=block.rule.platform,
                    kind="throttle",
                    block_seconds=block.until - now,
                    signal=block.rule.signal,
                )
            if block is not None and block.first_call_after is None:
                block.first_call_after = now
            for rule in self._rules:
                if not rule.matches(platform, (operation, *inner)):
                    continue
                if rule.count is not None and rule.count <= 0:
                    continue
                if self._random.random() < rule.rate:
                    if rule.count is not None:
                        rule.count -= 1
                    if rule.kind == "throttle":
                        self._blocks[platform] = QuotaBlock(rule, now, now + rule.block_seconds)
                    return rule
            return None

    @classmethod
    def from_env(cls, raw: str | None, seed: int = 0) -> FaultInjector:
        """Build from `ADFLUX_SANDBOX_FAULTS`: a JSON list of rule objects."""
        injector = cls(seed)
        for item in json.loads(raw) if raw else []:
            injector.add(FaultRule(**item))
        return injector
