"""The sandbox's state for both simulated platforms: objects by kind (in memory), ids (never
reused: the high-water mark is kept in a file, as a platform's ids outlive a restart), request
counts per platform, metrics that grow deterministically with an object's age, and seeding of
many campaigns at once (for scale tests and benchmarks)."""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

FIRST_ID = 10_000_000
ID_BLOCK = 1000  # ids reserved per write of the high-water mark

META_KINDS = ("campaigns", "adsets", "adcreatives", "ads")
GOOGLE_KINDS = ("campaign_budgets", "campaigns", "ad_groups", "ad_group_ads")
# The fields the Google sandbox's duplicate checks look live objects up by.
GOOGLE_INDEXED_FIELDS = ("name", "campaign_budget")
MAX_SEED = 100_000  # campaigns per seeding call
SEED_AGE_SECONDS = 3600.0  # seeded campaigns look an hour old: their metrics are not zero


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
    object) that callers read under `lock`; Meta callers write theirs directly, Google objects
    are written through `google_put` (which keeps `google_having` exact); ids come from
    `next_id()`.
    """

    def __init__(
        self, seed: int = 0, ids_file: Path | None = None, google_api_version: str = "v26"
    ) -> None:
        """`ids_file` keeps the id high-water mark across restarts (None: ids start afresh);
        `google_api_version` is the version whose types seeded Google campaigns take."""
        self.seed = seed
        self.google_api_version = google_api_version
        self.lock = threading.RLock()
        self._meta: dict[str, dict[str, Any]] = {kind: {} for kind in META_KINDS}
        self._google: dict[str, dict[str, Any]] = {kind: {} for kind in GOOGLE_KINDS}
        # (kind, field, value) -> resource names of the live objects with that value.
        self._google_index: dict[tuple[str, str, Any], set[str]] = {}
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

    def google_put(self, kind: str, name: str, obj: Any) -> None:
        """Store (or replace) a Google object; call under `lock`."""
        store = self.google_objects(kind)
        old = store.get(name)
        if old is not None:
            for key in _index_keys(kind, old):
                self._google_index.get(key, set()).discard(name)
        store[name] = obj
        if obj.status.name != "REMOVED":
            for key in _index_keys(kind, obj):
                self._google_index.setdefault(key, set()).add(name)

    def google_having(self, kind: str, field: str, value: Any) -> list[Any]:
        """The stored, not removed objects of `kind` whose `field` equals `value` (a lookup,
        not a scan: validation runs it on every create)."""
        store = self.google_objects(kind)
        return [store[name] for name in self._google_index.get((kind, field, value), ())]

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
                "requests_by_platform": dict(self._requests),
            }

    def reset(self) -> None:
        with self.lock:
            for store in (*self._meta.values(), *self._google.values()):
                store.clear()
            self._google_index.clear()
            self._requests = {"meta": 0, "google": 0}
            self.created_at.clear()

    def seed_campaigns(
        self,
        platform: Literal["meta", "google"],
        owner: str,
        count: int,
        paused_every: int = 0,
    ) -> list[str]:
        """Create `count` campaigns of ad account (Meta, `act_` optional) or customer (Google)
        `owner` at once, every `paused_every`-th paused (0: none); their ids, in order. Only
        the campaign level is made: sync reads nothing below it."""
        if not 0 < count <= MAX_SEED:
            raise ValueError(f"count must be between 1 and {MAX_SEED}")
        if paused_every < 0:
            raise ValueError("paused_every must be 0 or more")
        born = time.monotonic() - SEED_AGE_SECONDS
        stamp = datetime.now(UTC).isoformat()
        ids: list[str] = []
        with self.lock:
            if platform == "google":
                module = f"google.ads.googleads.{self.google_api_version}.resources.types.campaign"
                campaign_type = importlib.import_module(module).Campaign
            for index in range(count):
                number = self.next_id()
                paused = paused_every > 0 and index % paused_every == paused_every - 1
                if platform == "meta":
                    key = str(number)
                    status = "PAUSED" if paused else "ACTIVE"
                    self._meta["campaigns"][key] = {
                        "id": key,
                        "account_id": owner.removeprefix("act_"),
                        "name": f"Seeded campaign {index} [adflux:seed-{key}]",
                        "objective": "OUTCOME_LEADS",
                        "special_ad_categories": ["EMPLOYMENT"],
                        "special_ad_category_country": [],
                        "status": status,
                        "effective_status": status,
                        "created_time": stamp,
                        "updated_time": stamp,
                    }
                else:
                    key = f"customers/{owner}/campaigns/{number}"
                    self.google_put(
                        "campaigns",
                        key,
                        campaign_type(
                            resource_name=key,
                            id=number,
                            name=f"Seeded campaign {index} (adflux:seed-{number})",
                            status="PAUSED" if paused else "ENABLED",
                        ),
                    )
                self.created_at[key] = born
                ids.append(str(number))
        return ids

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


def _index_keys(kind: str, obj: Any) -> list[tuple[str, str, Any]]:
    message = type(obj).pb(obj)
    fields = message.DESCRIPTOR.fields_by_name
    return [(kind, f, getattr(message, f)) for f in GOOGLE_INDEXED_FIELDS if f in fields]
