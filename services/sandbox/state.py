"""The sandbox's state for both simulated platforms: objects by kind (in memory), ids (never
reused: the high-water mark is kept in a file, as a platform's ids outlive a restart), request
counts, and metrics that grow deterministically with an object's age."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIRST_ID = 10_000_000
ID_BLOCK = 1000  # ids reserved per write of the high-water mark

META_KINDS = ("campaigns", "adsets", "adcreatives", "ads")
GOOGLE_KINDS = ("campaign_budgets", "campaigns", "ad_groups", "ad_group_ads")


@dataclass(frozen=True)
class Metrics:
    """Cumulative delivery metrics of one object."""

    impressions: int
    clicks: int
    cost_micros: int
    conversions: float

    @property
    def spend(self) -> float:
        return self.cost_micros / 1_000_000


class SandboxState:
    """Thread-safe store shared by the Graph API app and the Google Ads gRPC server.

    `meta_objects(kind)` / `google_objects(kind)` return live dicts (id or resource name ->
    object) that callers mutate under `lock`; ids come from `next_id()`.
    """

    def __init__(self, seed: int = 0, ids_file: Path | None = None) -> None:
        """`ids_file` keeps the id high-water mark across restarts (None: ids start afresh)."""
        self.seed = seed
        self.lock = threading.RLock()
        self._meta: dict[str, dict[str, Any]] = {kind: {} for kind in META_KINDS}
        self._google: dict[str, dict[str, Any]] = {kind: {} for kind in GOOGLE_KINDS}
        self._ids_file = ids_file
        self._next = FIRST_ID
        if ids_file is not None and ids_file.exists():
            self._next = max(FIRST_ID, int(ids_file.read_text().strip()))
        self._reserved = self._next
        self._requests = {"meta": 0, "google": 0}
        self.created_at: dict[str, float] = {}

    def meta_objects(self, kind: str) -> dict[str, Any]:
        return self._meta.setdefault(kind, {})

    def google_objects(self, kind: str) -> dict[str, Any]:
        return self._google.setdefault(kind, {})

    def next_id(self) -> int:
        with self.lock:
            if self._next >= self._reserved:
                self._reserve(self._next + ID_BLOCK)
            self._next += 1
            return self._next - 1

    def _reserve(self, mark: int) -> None:
        """Persist `mark` before any id below it is handed out (a crash skips ids, never
        repeats one)."""
        if self._ids_file is not None:
            self._ids_file.parent.mkdir(parents=True, exist_ok=True)
            scratch = self._ids_file.with_suffix(".tmp")
            scratch.write_text(str(mark))
            os.replace(scratch, self._ids_file)
        self._reserved = mark

    def count_request(self, platform: str) -> None:
        with self.lock:
            self._requests[platform] = self._requests.get(platform, 0) + 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "meta": {kind: len(self._meta[kind]) for kind in META_KINDS},
                "google": {kind: len(self._google[kind]) for kind in GOOGLE_KINDS},
                "requests": sum(self._requests.values()),
            }

    def reset(self) -> None:
        with self.lock:
            for store in (*self._meta.values(), *self._google.values()):
                store.clear()
            self._requests = {"meta": 0, "google": 0}
            self.created_at.clear()

    def age_of(self, object_id: str) -> float:
        """Seconds since the object was created (0 for unknown objects)."""
        return max(0.0, time.monotonic() - self.created_at.get(object_id, time.monotonic()))

    def metrics_for(self, object_id: str, since_seconds: float) -> Metrics:
        """Metrics that grow with the object's age, at a rate fixed by the seed and its id."""
        digest = hashlib.sha256(f"{self.seed}:{object_id}".encode()).digest()
        rate = 5 + digest[0] % 20  # impressions per second
        ctr = 0.01 + (digest[1] % 40) / 1000  # 1 % .. 5 %
        impressions = int(rate * since_seconds)
        clicks = int(impressions * ctr)
        cost_micros = clicks * (200_000 + digest[2] * 2_000)  # 0.20 .. 0.71 per click
        conversions = round(clicks * (0.05 + (digest[3] % 10) / 100), 2)
        return Metrics(impressions, clicks, cost_micros, conversions)
