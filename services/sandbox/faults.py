"""Fault injection for the sandbox: rules set over HTTP or the environment, drawn per call."""

from __future__ import annotations

import json
import random
import threading
from dataclasses import asdict
from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

FaultKind = Literal["transient", "rate_limit", "permanent", "latency"]


@dataclass(config=ConfigDict(extra="forbid"))
class FaultRule:
    """One rule: `rate` of the calls to `operation` ('*' for all) on `platform` fail.

    `count` bounds how many times the rule fires (None: unbounded); `latency` rules delay the
    call by `latency_ms`. Validated on construction, so it is also the body of
    `POST /_sandbox/faults` and the items of `ADFLUX_SANDBOX_FAULTS`.
    """

    platform: Literal["meta", "google"]
    operation: str = Field(default="*", min_length=1)
    kind: FaultKind = "transient"
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    count: int | None = Field(default=None, ge=1)
    latency_ms: int = Field(default=0, ge=0, le=120_000)

    def matches(self, platform: str, operation: str) -> bool:
        return self.platform == platform and self.operation in ("*", operation)


class FaultInjector:
    """Thread-safe set of fault rules with a seeded random source (reproducible runs)."""

    def __init__(self, seed: int = 0) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[dict[str, object]]:
        with self._lock:
            return [asdict(rule) for rule in self._rules]

    def draw(self, platform: str, operation: str) -> FaultRule | None:
        """The rule that fires for this call, if any (consumes one of its `count`)."""
        with self._lock:
            for rule in self._rules:
                if not rule.matches(platform, operation):
                    continue
                if rule.count is not None and rule.count <= 0:
                    continue
                if self._random.random() < rule.rate:
                    if rule.count is not None:
                        rule.count -= 1
                    return rule
            return None

    @classmethod
    def from_env(cls, raw: str | None, seed: int = 0) -> FaultInjector:
        """Build from `ADFLUX_SANDBOX_FAULTS`: a JSON list of rule objects."""
        injector = cls(seed)
        for item in json.loads(raw) if raw else []:
            injector.add(FaultRule(**item))
        return injector
